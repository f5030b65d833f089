"""Random-weight GGUF models (llama, qwen2, phi2) at any shape, so the whole loop runs without downloading one.

`python -m jenova_fast.finetune.tiny_model models/tiny-base.gguf` writes the default (a 2-block llama, about
470 KB, under a second). Its vocabulary is the 256 byte tokens plus `<unk>`, `<s>`, `</s>` and `▁`, which
llama.cpp's SentencePiece tokenizer handles like any llama model, and it carries a Zephyr-style chat template
whose end of turn is the real `</s>` token.

`--arch qwen2` and `--arch phi2` write the other two layouts llama.cpp loads from the same kind of file: qwen2
adds q/k/v biases; phi2 has LayerNorm (weight and bias), a fused `attn_qkv`, a GELU FFN with biases and an
output head with a bias. Those two get a GPT-2-style byte-level BPE vocabulary (`tokenizer.ggml.model =
"gpt2"`). Any shape can be written, up to real models' (grouped-query heads, a vocabulary padded with filler
tokens to 151,936 entries); tensors are generated one at a time while the file is written, so memory stays
at about the largest tensor.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jenova_fast import _fs

# Zephyr's template: every turn ends with the EOS token, so training teaches the model where to stop.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# ChatML (Qwen2.5, SmolLM2): a turn ends with `<|im_end|>`, which such a vocabulary makes its EOS token.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ARCHITECTURES = ("llama", "qwen2", "phi2")

# gguf token types (gguf.TokenType)
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6

# A few GPT-2 merges (byte-level symbols, `Ġ` is the space): enough for llama.cpp to run real BPE merging.
_BPE_MERGES = (
    ("Ġ", "t"), ("h", "e"), ("Ġ", "a"), ("i", "n"), ("Ġt", "he"), ("e", "r"), ("o", "n"), ("Ġ", "s"),
    ("e", "d"), ("Ġ", "w"), ("r", "e"), ("n", "d"), ("Ġ", "o"), ("i", "t"), ("Ġ", "I"), ("in", "g"),
)


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """A tokenizer as llama.cpp reads it from GGUF metadata (`tokenizer.ggml.*`)."""

    model: str  # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    tokens: tuple[str, ...]
    types: tuple[int, ...]
    bos_id: int
    eos_id: int
    add_bos: bool
    scores: tuple[float, ...] | None = None  # SentencePiece only
    merges: tuple[str, ...] = ()  # BPE only
    pre: str | None = None  # BPE pre-tokenizer name, e.g. "phi-2", "qwen2", "smollm", "llama-bpe"
    unk_id: int | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def token_id(self, text: str) -> int:
        """The id of a token by its text (e.g. a template's end-of-turn marker), ValueError if absent."""
        return self.tokens.index(text)

    def padded(self, n_vocab: int) -> Vocabulary:
        """The same vocabulary grown to `n_vocab` entries with filler tokens, so a model can have a real
        model's vocabulary size (the output head's cost grows with it). Fillers are plain text tokens that no
        merge produces, so they never come out of tokenizing but decode cleanly when a random model picks one."""
        if n_vocab < len(self.tokens):
            raise ValueError(f"n_vocab {n_vocab} is smaller than the {len(self.tokens)} tokens this vocabulary needs")
        fillers = tuple(f"<filler_{i}>" for i in range(len(self.tokens), n_vocab))
        return dataclasses.replace(
            self,
            tokens=self.tokens + fillers,
            types=self.types + (_NORMAL,) * len(fillers),
            scores=None if self.scores is None else self.scores + (0.0,) * len(fillers),
        )


def spm_vocabulary() -> Vocabulary:
    """The default tiny model's SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, 256 byte tokens, `▁`."""
    tokens = ("<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "▁")
    types = (_UNKNOWN, _CONTROL, _CONTROL, *([_BYTE] * 256), _NORMAL)
    return Vocabulary(model="llama", tokens=tokens, types=types, bos_id=1, eos_id=2, add_bos=True,
                      scores=(0.0,) * len(tokens), unk_id=0)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which byte-level BPE vocabularies are written in."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def bpe_vocabulary(
    specials: Sequence[str] = ("<|endoftext|>",),
    *,
    bos: str = "<|endoftext|>",
    eos: str = "<|endoftext|>",
    pre: str = "default",
    add_bos: bool = False,
) -> Vocabulary:
    """A GPT-2-style byte-level BPE vocabulary: the 256 byte symbols, a few merges and their results, then
    `specials` as control tokens (`bos` and `eos` must be among them). `pre` is llama.cpp's pre-tokenizer
    name (`tokenizer.ggml.pre`): "default", "gpt-2", "phi-2", "qwen2", "smollm", "llama-bpe", ..."""
    byte_symbols = bytes_to_unicode()
    tokens = [byte_symbols[b] for b in range(256)]
    merges = []
    for left, right in _BPE_MERGES:
        merges.append(f"{left} {right}")
        tokens.append(left + right)
    tokens.extend(specials)
    if bos not in specials or eos not in specials:
        raise ValueError(f"bos {bos!r} and eos {eos!r} must be among the special tokens {list(specials)}")
    types = (_NORMAL,) * (len(tokens) - len(specials)) + (_CONTROL,) * len(specials)
    return Vocabulary(model="gpt2", tokens=tuple(tokens), types=types, bos_id=tokens.index(bos),
                      eos_id=tokens.index(eos), add_bos=add_bos, merges=tuple(merges), pre=pre)


def default_vocabulary(arch: str) -> Vocabulary:
    """llama: the SentencePiece byte vocabulary; qwen2: byte BPE with ChatML's tokens and `<|im_end|>` as EOS
    (as Qwen2.5-Instruct); phi2: byte BPE whose BOS and EOS are `<|endoftext|>` (as phi-2)."""
    if arch == "llama":
        return spm_vocabulary()
    if arch == "qwen2":
        return bpe_vocabulary(("<|endoftext|>", "<|im_start|>", "<|im_end|>"), bos="<|endoftext|>",
                              eos="<|im_end|>", pre="qwen2")
    if arch == "phi2":
        return bpe_vocabulary(("<|endoftext|>",), pre="phi-2")
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


@dataclasses.dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows = outputs, cols = inputs)
    init: str  # "normal" (scaled by 1/sqrt(cols)), "ones" or "zeros"


def _tensor_plan(arch: str, *, n_embd: int, n_layer: int, n_head: int, n_head_kv: int, n_ff: int,
                 n_vocab: int, tied_output: bool) -> list[_Tensor]:
    """Every tensor llama.cpp's loader for `arch` asks for, in the order they are written (and drawn from the
    random generator: the default llama's order is fixed, its bytes must not change)."""
    head_dim = n_embd // n_head
    n_q, n_kv = n_head * head_dim, n_head_kv * head_dim

    def w(name: str, rows: int, cols: int) -> _Tensor:
        return _Tensor(name, (rows, cols), "normal")

    def ones(name: str, n: int) -> _Tensor:
        return _Tensor(name, (n,), "ones")

    def zeros(name: str, n: int) -> _Tensor:
        return _Tensor(name, (n,), "zeros")

    plan = [w("token_embd.weight", n_vocab, n_embd)]
    for i in range(n_layer):
        blk = f"blk.{i}"
        if arch == "phi2":
            plan += [ones(f"{blk}.attn_norm.weight", n_embd), zeros(f"{blk}.attn_norm.bias", n_embd),
                     w(f"{blk}.attn_qkv.weight", n_q + 2 * n_kv, n_embd), zeros(f"{blk}.attn_qkv.bias", n_q + 2 * n_kv),
                     w(f"{blk}.attn_output.weight", n_embd, n_q), zeros(f"{blk}.attn_output.bias", n_embd),
                     w(f"{blk}.ffn_up.weight", n_ff, n_embd), zeros(f"{blk}.ffn_up.bias", n_ff),
                     w(f"{blk}.ffn_down.weight", n_embd, n_ff), zeros(f"{blk}.ffn_down.bias", n_embd)]
            continue
        plan += [ones(f"{blk}.attn_norm.weight", n_embd),
                 w(f"{blk}.attn_q.weight", n_q, n_embd), w(f"{blk}.attn_k.weight", n_kv, n_embd),
                 w(f"{blk}.attn_v.weight", n_kv, n_embd), w(f"{blk}.attn_output.weight", n_embd, n_q)]
        if arch == "qwen2":
            plan += [zeros(f"{blk}.attn_q.bias", n_q), zeros(f"{blk}.attn_k.bias", n_kv),
                     zeros(f"{blk}.attn_v.bias", n_kv)]
        plan += [ones(f"{blk}.ffn_norm.weight", n_embd), w(f"{blk}.ffn_gate.weight", n_ff, n_embd),
                 w(f"{blk}.ffn_up.weight", n_ff, n_embd), w(f"{blk}.ffn_down.weight", n_embd, n_ff)]
    plan.append(ones("output_norm.weight", n_embd))
    if arch == "phi2":
        plan.append(zeros("output_norm.bias", n_embd))
    if not tied_output:
        # a separate output head: llama.cpp never trains token_embd, so a tied head would stay random
        plan.append(w("output.weight", n_vocab, n_embd))
    if arch == "phi2":
        plan.append(zeros("output.bias", n_vocab))
    return plan


_CHUNK_VALUES = 1 << 22  # float64 values drawn at once: bounds the temporary to 32 MB per draw


def _materialize(tensor: _Tensor, rng: np.random.Generator) -> np.ndarray:
    """One tensor's F32 values. Normal matrices are drawn in row chunks, which gives exactly the values of one
    whole draw (numpy's Generator consumes its stream value by value) without a float64 copy of the matrix."""
    if tensor.init == "ones":
        return np.ones(tensor.shape, dtype=np.float32)
    if tensor.init == "zeros":
        return np.zeros(tensor.shape, dtype=np.float32)
    rows, cols = tensor.shape
    out = np.empty((rows, cols), dtype=np.float32)
    step = max(1, _CHUNK_VALUES // cols)
    scale = np.sqrt(cols)
    for start in range(0, rows, step):
        block = rng.standard_normal((min(step, rows - start), cols))
        block /= scale
        out[start:start + len(block)] = block
    return out


def _tensors(plan: Sequence[_Tensor], seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for tensor in plan:
        yield _materialize(tensor, rng)


def write_tiny_model(
    path: str | os.PathLike[str],
    *,
    arch: str = "llama",
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int | None = None,
    n_ff: int = 128,
    n_vocab: int | None = None,
    vocabulary: Vocabulary | None = None,
    tied_output: bool = False,
    context_length: int = 2048,
    rope_freq_base: float | None = None,
    n_rot: int | None = None,
    chat_template: str | None = TINY_CHAT_TEMPLATE,
    name: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight F32 model of `arch` ("llama", "qwen2" or "phi2") at any shape; the file appears
    atomically (temp file, then rename). `n_head_kv` < `n_head` gives grouped-query attention; `n_vocab` pads
    the vocabulary (`vocabulary`, else the architecture's default) with filler tokens; `tied_output` leaves out
    `output.weight` (llama.cpp then reuses `token_embd`, which it never trains); `n_rot` is phi-2's partial
    rotary width (default: the whole head). Tensors are drawn one at a time while writing, so memory stays at
    about the largest tensor: a 1B shape writes in well under 2 GB. The default call writes exactly the same
    bytes as it always has (tests and docs depend on that file)."""
    import gguf  # the `finetune` extra

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError(f"n_embd {n_embd} must be a multiple of n_head {n_head}, and n_head of n_head_kv {n_head_kv}")
    if arch == "phi2" and tied_output:
        raise ValueError("phi2 has no tied output: llama.cpp's phi2 loader requires output.weight and output.bias")
    vocab = vocabulary if vocabulary is not None else default_vocabulary(arch)
    if n_vocab is not None:
        vocab = vocab.padded(n_vocab)
    head_dim = n_embd // n_head

    path = Path(path)
    plan = _tensor_plan(arch, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff,
                        n_vocab=len(vocab), tied_output=tied_output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _fs.atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        try:
            writer.add_name(name if name is not None else f"jenova-fast tiny {arch}")
            writer.add_context_length(context_length)
            writer.add_embedding_length(n_embd)
            writer.add_block_count(n_layer)
            writer.add_feed_forward_length(n_ff)
            writer.add_head_count(n_head)
            writer.add_head_count_kv(n_head_kv)
            if arch == "phi2":
                writer.add_layer_norm_eps(1e-5)
            else:
                writer.add_layer_norm_rms_eps(1e-6 if arch == "qwen2" else 1e-5)
            writer.add_rope_dimension_count(head_dim if n_rot is None else n_rot)
            if rope_freq_base is not None:
                writer.add_rope_freq_base(rope_freq_base)
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            writer.add_tokenizer_model(vocab.model)
            if vocab.pre is not None:
                writer.add_tokenizer_pre(vocab.pre)
            writer.add_token_list(list(vocab.tokens))
            writer.add_token_types(list(vocab.types))
            if vocab.scores is not None:
                writer.add_token_scores(list(vocab.scores))
            if vocab.merges:
                writer.add_token_merges(list(vocab.merges))
            writer.add_bos_token_id(vocab.bos_id)
            writer.add_eos_token_id(vocab.eos_id)
            if vocab.unk_id is not None:
                writer.add_unk_token_id(vocab.unk_id)
            writer.add_add_bos_token(vocab.add_bos)
            writer.add_add_eos_token(False)
            if chat_template is not None:
                writer.add_chat_template(chat_template)

            for tensor in plan:
                writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(np.float32),
                                       4 * int(np.prod(tensor.shape)))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for values in _tensors(plan, seed):
                writer.write_tensor_data(values)
        finally:
            writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jenova_fast.finetune.tiny_model",
        description="Write a tiny random GGUF to try the fine-tuning loop without downloading weights.",
    )
    parser.add_argument("out", type=Path, help="where to write the model, e.g. models/tiny-base.gguf")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="llama",
                        help="llama (default), qwen2 (q/k/v biases) or phi2 (LayerNorm, GELU: only its head trains)")
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-head-kv", type=int, default=None, help="fewer than --n-head: grouped-query attention")
    parser.add_argument("--n-ff", type=int, default=128)
    parser.add_argument("--n-vocab", type=int, default=None, help="pad the vocabulary with filler tokens")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = write_tiny_model(args.out, arch=args.arch, n_embd=args.n_embd, n_layer=args.n_layer,
                                n_head=args.n_head, n_head_kv=args.n_head_kv, n_ff=args.n_ff, n_vocab=args.n_vocab,
                                seed=args.seed)
    except ModuleNotFoundError as exc:
        print(f"tiny_model: {exc}; install it with: pip install 'jenova-fast[finetune]'", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"tiny_model: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
