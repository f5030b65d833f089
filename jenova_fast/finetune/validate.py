"""Checks run before training, each a `FinetuneError` that names the file and the fix.

llama.cpp's trainer fails badly on bad input: a model it cannot load exits 1 with an empty stderr, too few
tokens abort with GGML_ASSERT or silently train zero steps, a context that is not ctx == batch == ubatch
leaves the K and V projections without gradients, and too little RAM ends in the OOM killer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jenova_fast.finetune.dequantize import TensorTypes, tensor_types
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.metadata import open_reader, read_kv

__all__ = ["FinetuneError", "ModelInfo", "inspect_model", "validate_base"]


# Architectures whose llama.cpp graph uses only ops with a backward pass in ggml (RMS norm, RoPE, SwiGLU,
# softmax attention). LayerNorm (`NORM`) and GELU have none, so phi2, gpt2, gemma (GEGLU)... abort mid-step.
TRAINABLE_ARCHITECTURES = frozenset({"llama", "qwen2", "qwen3"})
CONTEXT_MULTIPLE = 256
BYTES_PER_TRAINABLE_PARAM = 16  # weights + gradients + AdamW's two moments, all F32


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
    )


def check_architecture(info: ModelInfo) -> None:
    if info.architecture not in TRAINABLE_ARCHITECTURES:
        raise FinetuneError(
            f"{info.path}: architecture {info.architecture!r} cannot be trained by llama.cpp (its graph uses ops "
            f"without a backward pass, e.g. LayerNorm or GELU); use a base of architecture "
            f"{', '.join(sorted(TRAINABLE_ARCHITECTURES))}, e.g. SmolLM2, TinyLlama, Llama 3.2 or Qwen2.5"
        )


def check_trainable(info: ModelInfo) -> None:
    """Every weight matrix must be F32; otherwise llama.cpp freezes it and training changes nothing."""
    if info.types.other_types:
        raise FinetuneError(
            f"{info.path}: {info.types.n_tensors - info.types.n_f32} of {info.types.n_tensors} tensors are not F32 "
            f"({info.types.other_types}) and llama.cpp trains only F32 tensors; let `finetune` dequantize it "
            "(the default) or convert the weights with convert_hf_to_gguf.py --outtype f32"
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


def estimate_memory(info: ModelInfo, n_ctx: int) -> int:
    """Bytes to train: 16 per parameter plus activations and their gradients. Rough and on the safe side:
    28 GB for Llama 3.2 1B at n_ctx 512, where llama.cpp's docs report that 24 GB works."""
    trainable = info.types.n_params  # after dequantizing, everything but token_embd trains
    per_layer = 16 * info.n_embd + 4 * info.n_ff + 3 * info.n_head * n_ctx
    activations = 4 * n_ctx * (2 * info.n_layer * per_layer + 3 * info.n_vocab)
    return BYTES_PER_TRAINABLE_PARAM * trainable + activations


def available_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(info: ModelInfo, n_ctx: int, available: int | None = None) -> int:
    need = estimate_memory(info, n_ctx)
    have = available_memory() if available is None else available
    if need > have:
        raise FinetuneError(
            f"{info.path}: training needs about {need / 2**30:.1f} GiB ({info.types.n_params / 1e6:.0f}M parameters "
            f"x {BYTES_PER_TRAINABLE_PARAM} bytes + activations at --ctx {n_ctx}) but {have / 2**30:.1f} GiB is "
            "available; use a smaller base model, a lower --ctx, or a machine with more RAM"
        )
    return need


def validate_base(path: str | os.PathLike[str], n_ctx: int, *, require_f32: bool = True) -> ModelInfo:
    """All model-side checks; token counts are checked once the data is rendered."""
    info = inspect_model(path)
    check_architecture(info)
    if require_f32:
        check_trainable(info)
    check_context(n_ctx)
    check_memory(info, n_ctx)
    return info
