"""A tiny llama GGUF with random F32 weights, so the whole loop runs without downloading a model.

`python -m jenova_fast.finetune.tiny_model models/tiny-base.gguf` writes one (about 470 KB, under a
second). Its vocabulary is the 256 byte tokens plus `<unk>`, `<s>`, `</s>` and `▁`, which llama.cpp's
SentencePiece tokenizer handles like any llama model, and it carries a Zephyr-style chat template whose
end of turn is the real `</s>` token.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

# Zephyr's template: every turn ends with the EOS token, so training teaches the model where to stop.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# gguf token types
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def _vocabulary() -> tuple[list[str], list[int], list[float]]:
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "▁"]
    types = [_UNKNOWN, _CONTROL, _CONTROL, *([_BYTE] * 256), _NORMAL]
    scores = [0.0] * len(tokens)
    return tokens, types, scores


def write_tiny_model(
    path: str | os.PathLike[str],
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 128,
    context_length: int = 2048,
    chat_template: str | None = TINY_CHAT_TEMPLATE,
    seed: int = 0,
) -> Path:
    """Write a random-weight llama model; the file appears atomically (temp file, then rename)."""
    import gguf  # the `finetune` extra

    path = Path(path)
    tokens, types, scores = _vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def weight(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        writer.add_name("jenova-fast tiny llama")
        writer.add_context_length(context_length)
        writer.add_embedding_length(n_embd)
        writer.add_block_count(n_layer)
        writer.add_feed_forward_length(n_ff)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_rope_dimension_count(n_embd // n_head)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_scores(scores)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        if chat_template is not None:
            writer.add_chat_template(chat_template)

        ones = np.ones(n_embd, dtype=np.float32)
        writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
        for i in range(n_layer):
            blk = f"blk.{i}"
            writer.add_tensor(f"{blk}.attn_norm.weight", ones.copy())
            for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
                writer.add_tensor(f"{blk}.{name}.weight", weight(n_embd, n_embd))
            writer.add_tensor(f"{blk}.ffn_norm.weight", ones.copy())
            writer.add_tensor(f"{blk}.ffn_gate.weight", weight(n_ff, n_embd))
            writer.add_tensor(f"{blk}.ffn_up.weight", weight(n_ff, n_embd))
            writer.add_tensor(f"{blk}.ffn_down.weight", weight(n_embd, n_ff))
        writer.add_tensor("output_norm.weight", ones.copy())
        # a separate output head: llama.cpp never trains token_embd, so a tied head would stay random
        writer.add_tensor("output.weight", weight(n_vocab, n_embd))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jenova_fast.finetune.tiny_model",
        description="Write a tiny random llama GGUF to try the fine-tuning loop without downloading weights.",
    )
    parser.add_argument("out", type=Path, help="where to write the model, e.g. models/tiny-base.gguf")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = write_tiny_model(args.out, seed=args.seed)
    except ModuleNotFoundError as exc:
        print(f"tiny_model: {exc}; install it with: pip install 'jenova-fast[finetune]'", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
