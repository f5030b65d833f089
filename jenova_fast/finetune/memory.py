"""How much memory a training run needs, which `--train` fits the machine, and a refusal with the numbers.

Estimate = the working copy's tensors as stored + 12 bytes per trained parameter (its gradient and AdamW's
two moments; the F32 weight itself is in the working copy) + activations. Activations: the logits and their
gradient over the vocabulary, the temporary gradient of the largest trained tensor, a forward working set,
and the saved activations of every block the backward pass runs through (all of them for `all`, N for
`last:N`; with `--gradient-checkpointing`, each block's output and one block's activations). Checked against
measured peak RSS at three real shapes (docs/finetune.md): it errs on the safe side, by 4-30%.

A LoRA adapter: the base as it is + 16 bytes per adapter parameter (the adapter itself, its gradient and
AdamW's moments) + half those activations per block (a frozen matrix keeps no operands for its own gradient),
without the context's outputs (patch 0007), and the F32 casts of frozen matrices that the backward pass
multiplies by (patch 0006 casts one of more than 32 MB a slice at a time). It errs on the safe side by 2-35%.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.trainable import Selection, block_of

if TYPE_CHECKING:
    from jenova_fast.finetune.validate import ModelInfo

OPTIMIZER_BYTES = 12  # gradient + AdamW first and second moments, F32
HEADROOM = 1.15  # the estimate must fit 1/HEADROOM of the available memory
PROCESS_BYTES = 300 * 2**20  # Python, numpy, llama.cpp's libraries, the token streams
FROZEN_CASTS = 2 * 32 * 2**20  # an adapter's backward pass: F32 casts of frozen matrices alive at once


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    optimizer: int
    activations: int
    gpu: int = 0  # of the above, what sits in GPU memory with --gpu-layers

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations

    def figures(self, available: int) -> dict[str, int]:
        """The report's `memory_estimate`."""
        return {"total": self.total, "weights": self.weights, "optimizer": self.optimizer,
                "activations": self.activations, "gpu": self.gpu, "available": available}

    def describe(self) -> str:
        parts = (f"{gib(self.total)} = weights {gib(self.weights)} + gradients/AdamW {gib(self.optimizer)} + "
                 f"activations {gib(self.activations)}")
        return parts + (f" (GPU: {gib(self.gpu)})" if self.gpu else "")


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def backward_blocks(selection: Selection, n_layer: int) -> int:
    """Blocks the backward pass runs through: from the earliest trained tensor's block to the last."""
    blocks = [b for b in map(block_of, selection.trained) if b is not None]
    return n_layer - min(blocks) if blocks else 0


def estimate(*, model: ModelInfo, work_bytes: int, selection: Selection, n_ctx: int, gpu_layers: int = 0,
             gpu_weight_bytes: int = 0, checkpoints: bool = False, adapter: bool = False) -> MemoryEstimate:
    """`model`: the base's shape; `work_bytes`: the file trained over (the working copy, or the base itself under
    an adapter); `adapter`: `selection` is an adapter's tensors, which live outside that file."""
    n_layer, n_embd, n_ff, n_head, n_vocab = model.n_layer, model.n_embd, model.n_ff, model.n_head, model.n_vocab
    per_block = 4 * n_ctx * (16 * n_embd + 4 * n_ff + 3 * n_head * n_ctx)  # saved for backward, F32
    # logits, softmax, their gradient, the loss's copy, and the context's outputs (which the patched engine,
    # the only one that trains adapters, does not reserve: patch 0007)
    logits = (4 if adapter else 5) * n_ctx * n_vocab * 4
    if adapter:  # a frozen matrix saves no weight gradient's operands: 0.35-0.5 of the above, measured
        per_block //= 2
    # the backward pass computes a weight's gradient into a temporary before adding it: one largest tensor
    largest_gradient = 4 * selection.largest + (FROZEN_CASTS if adapter else 0)
    blocks = backward_blocks(selection, n_layer)
    saved = blocks * 4 * n_ctx * n_embd + per_block if checkpoints else blocks * per_block
    activations = PROCESS_BYTES + logits + largest_gradient + 2 * per_block + saved
    optimizer = (OPTIMIZER_BYTES + (4 if adapter else 0)) * selection.n_params
    gpu = 0
    if gpu_layers:
        layers = n_layer if gpu_layers < 0 else min(gpu_layers, n_layer)
        gpu = int((gpu_weight_bytes + optimizer) * layers / max(n_layer, 1)) + layers * per_block
    return MemoryEstimate(work_bytes, optimizer, activations, gpu)


def budget(given: int | None) -> int:
    """The memory a run may use: `--max-memory` when given, else what the machine has available now."""
    return available_memory() if given is None else given


def available_memory() -> int:
    """MemAvailable, or the cgroup's limit when that is lower (containers, CI runners)."""
    have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),):
        try:
            limit = open(limit_file, encoding="ascii").read().strip()
            usage = int(open(usage_file, encoding="ascii").read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit():
            have = min(have, int(limit) - usage)
    return have


def fits(need: MemoryEstimate, have: int) -> bool:
    return need.total * HEADROOM <= have


def choose(n_layer: int, estimate_for: Callable[[str], tuple[Selection, MemoryEstimate]], have: int, path: object
           ) -> tuple[Selection, MemoryEstimate, list[str]]:
    """No --train given: `all` if it fits with headroom, else the largest `last:N` that does."""
    tried: list[str] = []
    for spec in ["all", *(f"last:{n}" for n in range(n_layer - 1, 0, -1))]:  # last:n_layer is all
        selection, need = estimate_for(spec)
        if fits(need, have):
            return selection, need, tried
        if spec == "all" or len(tried) < 3:
            tried.append(f"{spec} needs {gib(need.total)}")
    raise FinetuneError(
        f"{path}: not even --train last:1 fits: {'; '.join(tried)} ... with {HEADROOM:.2f}x headroom, and "
        f"{gib(have)} is available; try --train head, a lower --ctx, a smaller base, or more RAM")


def check_gpu(need: MemoryEstimate, gpu_free: int, path: object) -> None:
    """--gpu-layers: the offloaded part must fit the GPUs' free memory too."""
    if need.gpu * HEADROOM > gpu_free:
        raise FinetuneError(
            f"{path}: the offloaded layers need about {gib(need.gpu)} of GPU memory (x{HEADROOM:.2f} headroom) but "
            f"{gib(gpu_free)} is free on the GPUs; lower --gpu-layers, train fewer tensors, or lower --ctx")


def check(selection: Selection, need: MemoryEstimate, have: int, path: object, n_ctx: int, *, option: str = "--train",
          fix: str = "train fewer tensors (e.g. --train last:2 or head)") -> None:
    """An explicit --train (or --adapter) that cannot fit is refused before loading anything (instead of the OOM
    killer)."""
    if not fits(need, have):
        raise FinetuneError(
            f"{path}: {option} {selection.spec} at --ctx {n_ctx} needs about {need.describe()} "
            f"({selection.n_params / 1e6:.1f}M trained parameters), x{HEADROOM:.2f} headroom, but {gib(have)} is "
            f"available; {fix}, lower --ctx, or free memory")
