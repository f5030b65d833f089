"""Checks run before training, each a `FinetuneError` that names the file and the fix.

llama.cpp's trainer fails badly on bad input: a model it cannot load exits 1 with an empty stderr, too few
tokens abort with GGML_ASSERT or silently train zero steps, and a context that is not ctx == batch == ubatch
leaves the K and V projections without gradients. (What may be trained: `trainable`; memory: `memory`.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.metadata import open_reader, read_kv

__all__ = ["FinetuneError", "ModelInfo", "TensorTypes", "inspect_model"]


CONTEXT_MULTIPLE = 256


@dataclass(frozen=True)
class TensorTypes:
    """How many tensors (and parameters) of a model are F32, i.e. trainable by llama.cpp as stored."""

    n_tensors: int
    n_f32: int
    n_params: int
    n_params_f32: int
    other_types: dict[str, int]  # ggml type name -> tensor count, for everything not F32


def tensor_types(reader: Any) -> TensorTypes:
    other: dict[str, int] = {}
    n_f32 = n_params = n_params_f32 = 0
    for tensor in reader.tensors:
        n_params += int(tensor.n_elements)
        if tensor.tensor_type.name == "F32":
            n_f32 += 1
            n_params_f32 += int(tensor.n_elements)
        else:
            other[tensor.tensor_type.name] = other.get(tensor.tensor_type.name, 0) + 1
    return TensorTypes(len(reader.tensors), n_f32, n_params, n_params_f32, other)


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    architecture: str
    context_length: int
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_vocab: int
    types: TensorTypes
    chat_template: str | None
    tensors: tuple[tuple[str, int], ...]  # (name, n_elements) in file order


def inspect_model(path: str | os.PathLike[str]) -> ModelInfo:
    """Read what validation needs from a GGUF; a FinetuneError if it is not a readable model."""
    path = Path(path)
    reader = open_reader(path)
    kv = read_kv(reader)
    arch = kv.get("general.architecture")
    if not isinstance(arch, str):
        raise FinetuneError(f"{path}: no general.architecture key; this GGUF is not a language model")

    def num(key: str, default: int = 0) -> int:
        value = kv.get(f"{arch}.{key}", default)
        return int(value[0] if isinstance(value, list) else value)  # some keys are per-layer arrays

    tokens = kv.get("tokenizer.ggml.tokens") or []
    if not tokens:
        raise FinetuneError(f"{path}: no tokenizer.ggml.tokens; the model has no vocabulary to train on")
    return ModelInfo(
        path=path,
        architecture=arch,
        context_length=num("context_length"),
        n_layer=num("block_count"),
        n_embd=num("embedding_length"),
        n_ff=num("feed_forward_length"),
        n_head=num("attention.head_count"),
        n_vocab=len(tokens),
        types=tensor_types(reader),
        chat_template=kv.get("tokenizer.chat_template"),
        tensors=tuple((t.name, int(t.n_elements)) for t in reader.tensors),
    )


def check_context(n_ctx: int, n_batch: int | None = None, n_ubatch: int | None = None) -> None:
    if n_ctx <= 0 or n_ctx % CONTEXT_MULTIPLE:
        raise FinetuneError(
            f"--ctx {n_ctx}: llama.cpp rounds the context up to a multiple of {CONTEXT_MULTIPLE}, so the windows "
            f"would not match what it trains on; use --ctx {max(CONTEXT_MULTIPLE, -(-n_ctx // 256) * 256)}"
        )
    if (n_batch, n_ubatch) != (n_ctx, n_ctx) and (n_batch, n_ubatch) != (None, None):
        raise FinetuneError(
            f"batch {n_batch} / ubatch {n_ubatch} differ from ctx {n_ctx}: the K and V projections would get no "
            "gradient; use ctx == batch == ubatch (-c N -b N -ub N for llama-finetune)"
        )


def check_tokens(data: Path, n_train_tokens: int, n_eval_tokens: int, n_ctx: int) -> None:
    """One window is n_ctx + 1 tokens; fewer aborts llama.cpp or trains zero steps while exiting 0."""
    need = n_ctx + 1
    for what, have in (("training", n_train_tokens), ("held-out", n_eval_tokens)):
        if have < need:
            raise FinetuneError(
                f"{data}: the {what} split has {have} tokens, but one step at --ctx {n_ctx} needs {need}; "
                "add records (e.g. `jenova-fast prepare` on a larger store), lower --ctx, "
                + ("or raise --eval-fraction" if what == "held-out" else "or lower --eval-fraction")
            )
