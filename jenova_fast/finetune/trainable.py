"""`--train SPEC`: which tensors of a base are trained, and which architectures allow what.

llama.cpp trains the F32 tensors its `param_filter` accepts and differentiates back only as far as the
first trained tensor: training the last N blocks skips the backward pass through every block before them,
which is most of the cost of a step. `token_embd` and `rope_freqs` are never trained by llama.cpp.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from jenova_fast.finetune.errors import FinetuneError

PRESETS = ("all", "last:N", "attn", "ffn", "head", "norms")
NEVER_TRAINED = frozenset({"token_embd.weight", "rope_freqs.weight"})  # llama.cpp skips them (llama_set_param)
HEAD_GLOBS = ("output.*", "output_norm.*")
_GLOBS = {
    "attn": ("blk.*.attn_q.*", "blk.*.attn_k.*", "blk.*.attn_v.*", "blk.*.attn_qkv.*", "blk.*.attn_output.*"),
    "ffn": ("blk.*.ffn_gate.*", "blk.*.ffn_up.*", "blk.*.ffn_down.*", "blk.*.ffn_gate_up.*"),
    "head": HEAD_GLOBS,
    "norms": ("*norm*",),
}
_BLOCK = re.compile(r"^blk\.(\d+)\.")

# Architectures whose whole llama.cpp graph has backward passes in ggml (RMS norm, RoPE, SwiGLU, softmax
# attention). Blocks of the ones below use LayerNorm (NORM), GELU or GEGLU, which have none (ggml-org/ggml
# issue 1514): differentiating through them aborts the process, so only what lies after the last block
# (the final norm's scale/bias and the output head) can be trained.
BLOCKS_TRAINABLE = frozenset({"llama", "qwen2", "qwen3"})
# ... and on the patched engine (jenova_fast/engine: NORM, GELU and GEGLU backward passes), checked by a test
# that trains them whole; the rest of HEAD_ONLY is probed in a child process there (a graph may hold other ops)
PATCHED_TRAINABLE = frozenset({"phi2"})
HEAD_ONLY = frozenset({
    "phi2", "gpt2", "gptj", "gptneox", "gemma", "gemma2", "gemma3", "starcoder", "starcoder2", "bloom",
    "falcon", "mpt", "stablelm", "bert", "nomic-bert", "jina-bert-v2", "t5", "codeshell", "olmo",
})


@dataclass(frozen=True)
class Selection:
    """The outcome of a spec on one model: the tensors to train, named in the report."""

    spec: str
    trained: tuple[str, ...]  # in the model's tensor order
    n_params: int
    largest: int = 0  # elements of the largest trained tensor


def block_of(name: str) -> int | None:
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def _matches(item: str, name: str, n_layer: int) -> bool:
    if item == "all":
        return True
    if item.startswith("last:"):
        count = item.partition(":")[2]
        if not count.isdigit() or int(count) < 0:
            raise FinetuneError(f"--train {item!r}: last:N needs a whole number of blocks, e.g. last:2")
        block = block_of(name)
        in_tail = block is not None and block >= n_layer - int(count)
        return in_tail or any(fnmatch.fnmatchcase(name, glob) for glob in HEAD_GLOBS)
    return any(fnmatch.fnmatchcase(name, glob) for glob in _GLOBS.get(item, (item,)))


def select(spec: str, tensors: Iterable[tuple[str, int]], n_layer: int) -> Selection:
    """Resolve `spec` (presets and name globs, comma-separated) against (name, n_elements) pairs."""
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise FinetuneError(f"--train {spec!r}: name a preset ({', '.join(PRESETS)}) or tensor-name globs")
    tensors = list(tensors)
    trained = [(name, n) for name, n in tensors
               if name not in NEVER_TRAINED and any(_matches(item, name, n_layer) for item in items)]
    for item in items:
        if item not in _GLOBS and item != "all" and not item.startswith("last:") and not any(
                _matches(item, name, n_layer) for name, _ in tensors):
            raise FinetuneError(
                f"--train {spec!r}: {item!r} is not a preset ({', '.join(PRESETS)}) and matches no tensor; "
                "list the names with `python -m gguf.scripts.gguf_dump BASE.gguf`")
    if not trained:
        raise FinetuneError(f"--train {spec!r} selects no tensor llama.cpp can train (token_embd never is)")
    return Selection(spec, tuple(name for name, _ in trained), sum(n for _, n in trained),
                     max(n for _, n in trained))


def check_architecture(architecture: str, selection: Selection, path: object, engine: str = "stock") -> bool:
    """Refuse, before anything is loaded, a selection whose backward pass would abort inside ggml. Returns
    True when the architecture is unknown here and a step must be tried in a child process first (`probe`).
    The patched engine has NORM/GELU/GEGLU backward passes: the HEAD_ONLY rule is the stock engine's."""
    if architecture in BLOCKS_TRAINABLE or (engine == "patched" and architecture in PATCHED_TRAINABLE):
        return False
    beyond_head = [name for name in selection.trained
                   if not any(fnmatch.fnmatchcase(name, glob) for glob in HEAD_GLOBS)]
    if not beyond_head:
        return False
    if architecture not in HEAD_ONLY or engine == "patched":
        return True  # on the patched engine, a HEAD_ONLY architecture not checked here is probed
    raise FinetuneError(
        f"{path}: --train {selection.spec} would train {beyond_head[0]} (and {len(beyond_head) - 1} more) of "
        f"architecture {architecture!r}, but its blocks use LayerNorm and GELU, which have no backward pass in "
        "stock llama.cpp, so it would abort mid-step; build the patched engine, which has them (jenova-fast engine "
        "build), or use --train head (the output head and the final norm, which lie after every block)")


def default_spec(architecture: str, engine: str = "stock") -> str | None:
    """The spec to use when no --train is given and memory is no concern: None means 'choose by memory'."""
    trainable = BLOCKS_TRAINABLE | (PATCHED_TRAINABLE if engine == "patched" else frozenset())
    return None if architecture in trainable else "head"
