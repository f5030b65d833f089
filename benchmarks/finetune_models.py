"""Random-weight GGUFs with the true shapes of real fine-tuning bases, for the finetune benchmarks.

    python -m benchmarks.finetune_models FOLDER [--model smollm2-135m ...] [--types F32,Q4_K_M,Q8_0] [--check]

Weights cannot be downloaded here, and a step's time and memory depend on the shapes, not on the values: each
model is written by `jenova_fast.finetune.tiny_model.write_tiny_model` (F32, drawn tensor by tensor while
writing) and quantized by libllama's own `llama_model_quantize`, as `llama-quantize` would. Files are cached in
FOLDER as `<model>-<TYPE>.gguf` and rebuilt only when older than this script or the generator (a quantized
file also when older than its F32 source). Sizes and build times are printed; `--check` loads each file with
llama.cpp and generates one token.

One deliberate difference from the real checkpoints: all three tie their output head to `token_embd`, but
these files carry a separate `output.weight` (same shape, random). llama.cpp never trains `token_embd`, so a
tied model would get no trained head at all; a user fine-tuning one needs the head untied, and the benchmark
should time that (the head is the largest matrix: vocabulary x width). `--tied` writes the tied layout.

Each vocabulary is a byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the real model's pre-tokenizer,
special tokens and chat template, padded with filler tokens to the real size. Having only a few merges, it
turns text into roughly one token per byte, where the real tokenizers give about four bytes per token: count
tokens per record with the real tokenizer's ratio, not with these files.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import resource
import sys
import time
from pathlib import Path

from jenova_fast import _fs
from jenova_fast.finetune import tiny_model
from jenova_fast.finetune.tiny_model import CHATML_TEMPLATE, Vocabulary, bpe_vocabulary, write_tiny_model

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# llama_ftype values of llama.h (`LLAMA_FTYPE_*`), by the names llama-quantize uses
QUANT_TYPES = {"Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
               "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K"}
TYPES = ("F32", *QUANT_TYPES)


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """A real model's architecture and sizes (from its config.json), enough to write a file llama.cpp treats
    like the real one."""

    key: str
    title: str
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    rope_freq_base: float
    context_length: int
    specials: tuple[str, ...]
    bos: str
    eos: str
    pre: str
    add_bos: bool
    chat_template: str

    def vocabulary(self) -> Vocabulary:
        return bpe_vocabulary(self.specials, bos=self.bos, eos=self.eos, pre=self.pre,
                              add_bos=self.add_bos).padded(self.n_vocab)

    def parameters(self, *, tied: bool = False) -> int:
        """Parameter count of the file written (the separate head included unless `tied`)."""
        head_dim = self.n_embd // self.n_head
        q, kv = self.n_head * head_dim, self.n_head_kv * head_dim
        block = 2 * self.n_embd * q + 2 * self.n_embd * kv + 3 * self.n_embd * self.n_ff + 2 * self.n_embd
        if self.arch == "qwen2":
            block += q + 2 * kv
        embeddings = self.n_vocab * self.n_embd * (1 if tied else 2)
        return embeddings + self.n_layer * block + self.n_embd


_CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SHAPES: dict[str, ModelShape] = {s.key: s for s in (
    ModelShape("smollm2-135m", "SmolLM2-135M", "llama", n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536,
               n_vocab=49_152, rope_freq_base=100_000.0, context_length=8192, specials=_CHATML,
               bos="<|im_start|>", eos="<|im_end|>", pre="smollm", add_bos=False, chat_template=CHATML_TEMPLATE),
    ModelShape("qwen2.5-0.5b", "Qwen2.5-0.5B", "qwen2", n_embd=896, n_layer=24, n_head=14, n_head_kv=2, n_ff=4864,
               n_vocab=151_936, rope_freq_base=1_000_000.0, context_length=32_768, specials=_CHATML,
               bos="<|endoftext|>", eos="<|im_end|>", pre="qwen2", add_bos=False, chat_template=CHATML_TEMPLATE),
    ModelShape("llama-3.2-1b", "Llama-3.2-1B", "llama", n_embd=2048, n_layer=16, n_head=32, n_head_kv=8,
               n_ff=8192, n_vocab=128_256, rope_freq_base=500_000.0, context_length=131_072,
               specials=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                         "<|eot_id|>"),
               bos="<|begin_of_text|>", eos="<|eot_id|>", pre="llama-bpe", add_bos=True,
               chat_template=LLAMA3_TEMPLATE),
    # the seed's own model: LayerNorm, GELU, a fused QKV (the stock engine trains its head only)
    ModelShape("phi-2", "phi-2", "phi2", n_embd=2560, n_layer=32, n_head=32, n_head_kv=32, n_ff=10240,
               n_vocab=51_200, rope_freq_base=10_000.0, context_length=2048, specials=("<|endoftext|>",),
               bos="<|endoftext|>", eos="<|endoftext|>", pre="phi-2", add_bos=False, chat_template=CHATML_TEMPLATE),
)}


def model_path(folder: str | os.PathLike[str], key: str, qtype: str = "F32", *, tied: bool = False) -> Path:
    """Where the cache keeps a file: one name per (model, type, layout), so callers can find it without building."""
    return Path(folder) / f"{key}{'-tied' if tied else ''}-{qtype}.gguf"


def _fresh(path: Path, *sources: Path) -> bool:
    """Present and newer than everything it was made from (so an edit of the generator rebuilds it)."""
    return path.exists() and all(path.stat().st_mtime > src.stat().st_mtime for src in sources)


_GENERATORS = (Path(__file__), Path(tiny_model.__file__))


def write_f32(shape: ModelShape, path: str | os.PathLike[str], *, tied: bool = False, seed: int = 0) -> Path:
    """The random-weight F32 model of `shape` (about 4 bytes per parameter; the 1B shape is ~6 GB)."""
    return write_tiny_model(
        path, arch=shape.arch, n_embd=shape.n_embd, n_layer=shape.n_layer, n_head=shape.n_head,
        n_head_kv=shape.n_head_kv, n_ff=shape.n_ff, vocabulary=shape.vocabulary(), tied_output=tied,
        context_length=shape.context_length, rope_freq_base=shape.rope_freq_base,
        chat_template=shape.chat_template, name=f"random {shape.title} shape (jenova-fast benchmark)", seed=seed,
    )


def quantize(src: str | os.PathLike[str], dst: str | os.PathLike[str], qtype: str, *, threads: int = 0) -> Path:
    """`src` quantized to `qtype` (a key of QUANT_TYPES) by libllama, written atomically. As in real files,
    K-quants fall back to Q5_0/Q8_0 for rows that are not a multiple of 256 (576, 896 wide)."""
    from jenova_fast.finetune.runtime import llama_cpp_module

    if qtype not in QUANT_TYPES:
        raise ValueError(f"unknown quantization {qtype!r}; choose one of {', '.join(QUANT_TYPES)}")
    lc = llama_cpp_module()  # routes llama.cpp's log to `logging`
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    params = lc.llama_model_quantize_default_params()
    params.ftype = getattr(lc, QUANT_TYPES[qtype])
    params.nthread = threads
    try:
        if lc.llama_model_quantize(os.fsencode(src), os.fsencode(tmp), params) != 0:
            raise RuntimeError(f"{src}: llama_model_quantize to {qtype} failed; set logging to DEBUG to see why")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


@dataclasses.dataclass
class Built:
    """One file of the cache: where it is, how big, and what making it cost (about 0 s when it was cached)."""

    key: str
    qtype: str
    path: Path
    bytes: int
    seconds: float
    cached: bool
    peak_rss_mb: float


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_model(folder: str | os.PathLike[str], key: str, qtype: str = "F32", *, tied: bool = False,
                 threads: int = 0) -> Built:
    """The cached file of model `key` (a key of SHAPES) in `qtype`, built (with its F32 source) if missing or
    stale. Building the 1B shape writes ~6 GB and takes minutes: call it once and keep the folder."""
    if key not in SHAPES:
        raise ValueError(f"unknown model {key!r}; choose one of {', '.join(SHAPES)}")
    if qtype not in TYPES:
        raise ValueError(f"unknown type {qtype!r}; choose one of {', '.join(TYPES)}")
    f32 = model_path(folder, key, "F32", tied=tied)
    start = time.perf_counter()
    cached = _fresh(f32, *_GENERATORS)
    if not cached:
        write_f32(SHAPES[key], f32, tied=tied)
    if qtype == "F32":
        return Built(key, qtype, f32, f32.stat().st_size, time.perf_counter() - start, cached, _peak_rss_mb())
    out = model_path(folder, key, qtype, tied=tied)
    start = time.perf_counter()
    cached = _fresh(out, f32, *_GENERATORS)
    if not cached:
        quantize(f32, out, qtype, threads=threads)
    return Built(key, qtype, out, out.stat().st_size, time.perf_counter() - start, cached, _peak_rss_mb())


def generate_one_token(path: str | os.PathLike[str], *, prompt: str = "Hello", threads: int = 0) -> tuple[int, str]:
    """Load `path` as the fine-tuning pipeline does (`runtime.load_model`) and pick the next token of `prompt`
    greedily: proof that llama.cpp accepts the file and runs its graph. Returns (token id, its text)."""
    import ctypes

    import numpy as np

    from jenova_fast.finetune import runtime

    lc = runtime.llama_cpp_module()
    with runtime.load_model(path) as model, \
            runtime.new_context(model, 256, threads or _fs.available_cores()) as ctx:
        ids = runtime.tokenize(model, prompt, add_bos=True)
        batch = lc.llama_batch_get_one(ids.ctypes.data_as(ctypes.POINTER(lc.llama_token)), len(ids))
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError(f"{path}: llama_decode failed")
        vocab = lc.llama_model_get_vocab(model)
        n_vocab = lc.llama_vocab_n_tokens(vocab)
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        if not np.isfinite(logits).all():
            raise RuntimeError(f"{path}: the logits are not finite")
        token = int(np.argmax(logits))
        buf = ctypes.create_string_buffer(256)
        n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
        return token, buf.raw[:max(n, 0)].decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.finetune_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="cache folder for the GGUF files (several GB for the 1B shape)")
    parser.add_argument("--model", action="append", choices=list(SHAPES),
                        help="which shape (repeatable; default: all three)")
    parser.add_argument("--types", default="F32,Q4_K_M,Q8_0", help=f"comma-separated, of {', '.join(TYPES)}")
    parser.add_argument("--tied", action="store_true", help="tie the output head to token_embd, as the real models")
    parser.add_argument("--threads", type=int, default=0, help="quantization threads (0: all cores)")
    parser.add_argument("--check", action="store_true", help="load each file with llama.cpp, generate one token")
    parser.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp warnings")
    args = parser.parse_args(argv)
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        parser.error(f"unknown type(s) {', '.join(unknown)}; choose from {', '.join(TYPES)}")
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if not args.verbose:  # K-quant fallbacks on 576/896-wide rows are expected: one warning per tensor
        logging.getLogger("jenova_fast.finetune.llama_cpp").setLevel(logging.ERROR)
    built: list[Built] = []
    for key in args.model or list(SHAPES):
        shape = SHAPES[key]
        print(f"{shape.title} shape: {shape.parameters(tied=args.tied) / 1e6:.1f}M parameters in the file", flush=True)
        for qtype in types:
            b = ensure_model(args.folder, key, qtype, tied=args.tied, threads=args.threads)
            built.append(b)
            made = "cached" if b.cached else f"built in {b.seconds:.1f} s"
            print(f"  {b.path.name}: {b.bytes / 2**20:.1f} MiB, {made}, peak RSS so far {b.peak_rss_mb:.0f} MB",
                  flush=True)
    for b in built if args.check else []:
        start = time.perf_counter()
        token, text = generate_one_token(b.path, threads=args.threads)
        print(f"check {b.path.name}: loads, next token {token} {text!r} in {time.perf_counter() - start:.1f} s",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
