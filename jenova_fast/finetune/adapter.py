"""LoRA adapters: which matrices get one, their initial and trained tensors as GGUF files llama.cpp loads
(`--lora`, `Llama(lora_path=...)`), and the update folded into a full model for runtimes without adapters.

Names and layout are those of llama.cpp's convert_lora_to_gguf.py: for a weight `W` of ggml shape
[n_in, n_out], `<W>.lora_a` is [n_in, r] and `<W>.lora_b` is [r, n_out], and the layer computes
`W x + (alpha / r) B A x`. A starts as PEFT starts it (Kaiming-uniform), B at zero: step 0 is the base exactly.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jenova_fast import _fs
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.metadata import open_reader, read_kv

DEFAULT_RANK = 16
SUFFIXES = (".lora_a", ".lora_b")
# every projection of attention and the FFN, as `--train attn,ffn` names them
DEFAULT_TARGETS = "attn,ffn"
BASE_SHA256_KEY = "adapter.jenova.base_sha256"  # which base the adapter was trained on, checked at install
BASE_PATH_KEY = "adapter.jenova.base_path"  # where that base was: install-model and the runtime find it there


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def parse_adapter(text: str, alpha: float | None = None) -> LoraSpec:
    """`lora` or `lora:RANK`; alpha defaults to the rank (a scale of 1)."""
    match = re.fullmatch(r"lora(?::(\d+))?", text.strip())
    if not match or (match.group(1) is not None and int(match.group(1)) < 1):
        raise FinetuneError(f"--adapter {text!r}: use lora or lora:RANK, e.g. lora:16")
    rank = int(match.group(1) or DEFAULT_RANK)
    if alpha is not None and alpha <= 0:
        raise FinetuneError(f"--lora-alpha {alpha}: must be positive (the update is scaled by alpha / rank)")
    return LoraSpec(rank, float(alpha if alpha is not None else rank))


def targets(reader: Any, names: Iterable[str]) -> list[tuple[str, int, int]]:
    """(name, n_in, n_out) of the block matrices among `names` that can carry an adapter."""
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    found = []
    for name in names:
        shape = shapes.get(name)
        if shape is not None and len(shape) == 2 and name.startswith("blk.") and name.endswith(".weight"):
            found.append((name, shape[0], shape[1]))
    if not found:
        raise FinetuneError("--adapter: the tensors --train names hold no block weight matrix to adapt; use "
                            f"--train {DEFAULT_TARGETS} (every projection, the default), attn, ffn or name globs")
    return found


def initial_tensors(matrices: list[tuple[str, int, int]], rank: int, seed: int) -> dict[str, np.ndarray]:
    """A ~ U(-1/sqrt(n_in), 1/sqrt(n_in)) (PEFT's kaiming_uniform_(a=sqrt(5))), B = 0; numpy shapes are ggml's
    reversed."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, n_in, n_out in matrices:
        bound = 1.0 / np.sqrt(n_in)
        tensors[name + ".lora_a"] = rng.uniform(-bound, bound, size=(rank, n_in)).astype(np.float32)
        tensors[name + ".lora_b"] = np.zeros((n_out, rank), dtype=np.float32)
    return tensors


def sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_adapter(path: str | os.PathLike[str], base: str | os.PathLike[str], spec: LoraSpec,
                  tensors: dict[str, np.ndarray], *, base_sha256: str | None = None) -> Path:
    """A GGUF LoRA adapter for `base` (general.type adapter, adapter.type lora, adapter.lora.alpha), written
    atomically."""
    import gguf

    kv = read_kv(open_reader(base))
    architecture = kv["general.architecture"]
    path = Path(path)
    with _fs.atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, architecture)
        writer.add_string("general.type", "adapter")
        writer.add_string("general.name", f"{kv.get('general.name', Path(base).stem)} LoRA (jenova-fast)")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", spec.alpha)
        writer.add_string(BASE_SHA256_KEY, base_sha256 or sha256(base))
        writer.add_string(BASE_PATH_KEY, str(Path(base).resolve()))
        for name, data in tensors.items():
            writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def read_adapter(path: str | os.PathLike[str]) -> tuple[float, dict[str, np.ndarray], dict[str, Any]]:
    """(alpha, tensors by name, metadata) of an adapter file."""
    reader = open_reader(path)
    kv = read_kv(reader)
    if kv.get("general.type") != "adapter" or kv.get("adapter.type") != "lora":
        raise FinetuneError(f"{path}: not a LoRA adapter (general.type {kv.get('general.type')!r}); give the "
                            "file `jenova-fast finetune --adapter` wrote")
    tensors = {t.name: np.array(t.data, dtype=np.float32).reshape([int(n) for n in reversed(t.shape)])
               for t in reader.tensors}
    return float(kv.get("adapter.lora.alpha", 0.0)), tensors, kv


def merged_weight(weight: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """W + (alpha / r) B A, in numpy's (n_out, n_in) layout of W."""
    rank = a.shape[0]
    return (weight + (alpha / rank) * (b.astype(np.float64) @ a.astype(np.float64))).astype(np.float32)


def merge(base: str | os.PathLike[str], adapter_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[
        str, str]:
    """Write `out`: `base` with each adapted matrix replaced by W + (alpha / r) B A, quantized back to its type
    in the base (as llama-quantize would for its row length), every other tensor and key byte for byte. For
    runtimes that cannot load adapters. Streamed: one tensor in memory at a time. Returns name -> type written."""
    import gguf

    from jenova_fast.finetune.metadata import rewrite_gguf
    from jenova_fast.finetune.working_copy import quantize, requantize_type

    alpha, tensors, _ = read_adapter(adapter_path)
    written: dict[str, str] = {}

    def rewrite(name: str, ggml_type: Any, data: np.ndarray) -> tuple[Any, Any, Any, Any]:
        a = tensors.get(name + ".lora_a")
        if a is None:
            return data.shape, data.dtype, lambda: data, (None if ggml_type.value in (0, 1) else ggml_type)
        b = tensors[name + ".lora_b"]
        shape = (b.shape[0], a.shape[1])  # numpy's (n_out, n_in)

        def updated() -> np.ndarray:
            weight = gguf.dequantize(data, ggml_type).astype(np.float32, copy=False).reshape(shape)
            return merged_weight(weight, a, b, alpha)

        target = requantize_type("base", ggml_type.name, shape[1], 2)
        written[name] = target
        if target == "F32":
            return shape, np.float32, updated, None
        if target == "F16":
            return shape, np.float16, lambda: updated().astype(np.float16), None
        return (gguf.quant_shape_to_byte_shape(shape, gguf.GGMLQuantizationType[target]), np.uint8,
                lambda: quantize(updated(), target), gguf.GGMLQuantizationType[target])

    rewrite_gguf(base, out, tensor_rewrite=rewrite)
    return written
