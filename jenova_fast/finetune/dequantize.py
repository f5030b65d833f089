"""Quantized or F16 bases become an F32 working copy: llama.cpp trains only F32 tensors.

A Q4_K_M file such as the seed's `phi-2.Q4_K_M.gguf` loads in llama.cpp's trainer, but every quantized
tensor stays frozen, so nothing (or only the norms) would learn. The `gguf` package can dequantize every
common type in numpy; the copy is about 4 bytes per parameter (7x a Q4_K_M file) and keeps the quantization
error of the original: training cannot recover the precision the quantizer threw away.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.metadata import open_reader, rewrite_gguf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorTypes:
    """How many tensors (and parameters) of a model are F32, i.e. trainable by llama.cpp."""

    n_tensors: int
    n_f32: int
    n_params: int
    n_params_f32: int
    other_types: dict[str, int]  # ggml type name -> tensor count, for everything not F32


def tensor_types(reader: Any) -> TensorTypes:
    import gguf

    other: dict[str, int] = {}
    n_f32 = n_params = n_params_f32 = 0
    for tensor in reader.tensors:
        n_params += int(tensor.n_elements)
        if tensor.tensor_type == gguf.GGMLQuantizationType.F32:
            n_f32 += 1
            n_params_f32 += int(tensor.n_elements)
        else:
            other[tensor.tensor_type.name] = other.get(tensor.tensor_type.name, 0) + 1
    return TensorTypes(len(reader.tensors), n_f32, n_params, n_params_f32, other)


def needs_dequantize(path: str | os.PathLike[str]) -> bool:
    return bool(tensor_types(open_reader(path)).other_types)


def dequantize_to_f32(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write `dst`, a copy of `src` with every tensor in F32 (streamed, one tensor in memory at a time)."""
    import gguf

    reader = open_reader(src)
    types = tensor_types(reader)
    unsupported = sorted(
        name for name in types.other_types
        if not _can_dequantize(gguf.GGMLQuantizationType[name])
    )
    if unsupported:
        raise FinetuneError(
            f"{src}: the gguf package cannot dequantize {', '.join(unsupported)}; "
            "convert the original weights to F32 with llama.cpp's convert_hf_to_gguf.py --outtype f32"
        )
    log.info("%s: dequantizing %s to F32 (about %.1f GB)", src, types.other_types, types.n_params * 4 / 1e9)

    def to_f32(name: str, ggml_type: Any, data: np.ndarray) -> tuple[tuple[int, ...], Any, Any, Any]:
        if ggml_type == gguf.GGMLQuantizationType.F32:
            return data.shape, np.float32, lambda: data, None
        shape = data.shape if data.dtype != np.uint8 else gguf.quant_shape_from_byte_shape(data.shape, ggml_type)
        f32 = np.float32
        return tuple(shape), f32, lambda: gguf.dequantize(data, ggml_type).astype(f32, copy=False), None

    del reader
    return rewrite_gguf(
        src, dst,
        set_from={"general.file_type": (int(gguf.LlamaFileType.ALL_F32), gguf.GGUFValueType.UINT32)},
        tensor_rewrite=to_f32,
    )


def _can_dequantize(qtype: Any) -> bool:
    import gguf

    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return True
    quant = gguf.quants._type_traits.get(qtype)  # the registry of types gguf implements in numpy
    return quant is not None and "dequantize_blocks" in vars(quant)
