"""The random-weight model writer at every architecture it supports: llama.cpp loads each file and chats.

Real files only: written by the `gguf` package, read back by gguf's reader and by llama-cpp-python.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from jenova_fast.finetune.tiny_model import (  # noqa: E402
    CHATML_TEMPLATE,
    _materialize,
    _Tensor,
    bpe_vocabulary,
    bytes_to_unicode,
    spm_vocabulary,
    write_tiny_model,
)

# sha256 of `write_tiny_model(path)` as written by the code before it learnt other architectures (commit
# fab3141, with gguf 0.19.0 and numpy 2.4): the default file must not change, tests and docs depend on it.
DEFAULT_SHA256 = "2ed6360bfa427ae4725d73170e80535038c6fb57d8b26a32252c05059205c839"


def _kv(reader):
    out = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        out[field.name] = field.contents()
    return out


def _tensors(reader):
    return {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}


def _chat(path, messages, **kwargs):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False, seed=0, **kwargs)
    try:
        reply = llm.create_chat_completion(messages=messages, max_tokens=4, temperature=0.0)
        prompt = llm.tokenize(b" the", add_bos=False, special=False)
        return reply, [llm.detokenize([t]).decode() for t in prompt], llm
    finally:
        llm.close()


MESSAGES = [{"role": "user", "content": "What did I learn about sleep?"}]


def test_the_default_model_is_byte_identical_to_before(tmp_path):
    path = write_tiny_model(tmp_path / "tiny.gguf")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DEFAULT_SHA256


def test_phi2_has_the_tensors_llama_cpp_phi2_loader_asks_for_and_chats(tmp_path):
    path = write_tiny_model(tmp_path / "phi2.gguf", arch="phi2")
    reader = gguf.GGUFReader(path)
    kv, shapes = _kv(reader), _tensors(reader)
    assert kv["general.architecture"] == "phi2" and kv["tokenizer.ggml.model"] == "gpt2"
    assert kv["tokenizer.ggml.pre"] == "phi-2" and kv["phi2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    n_vocab = len(kv["tokenizer.ggml.tokens"])
    assert kv["tokenizer.ggml.tokens"][kv["tokenizer.ggml.eos_token_id"]] == "<|endoftext|>"
    # gguf's reader gives shapes in numpy order here: (outputs, inputs)
    assert shapes["blk.0.attn_qkv.weight"] == (3 * 64, 64) and shapes["blk.0.attn_qkv.bias"] == (3 * 64,)
    assert shapes["output.weight"] == (n_vocab, 64) and shapes["output.bias"] == (n_vocab,)
    assert {"output_norm.weight", "output_norm.bias", "blk.1.attn_norm.bias", "blk.1.ffn_up.bias",
            "blk.1.ffn_down.bias", "blk.1.attn_output.bias"} <= set(shapes)
    assert not any("ffn_gate" in name or "ffn_norm" in name for name in shapes)

    reply, pieces, _ = _chat(path, MESSAGES)
    assert reply["usage"]["completion_tokens"] >= 1
    assert pieces == [" the"]  # byte-level BPE: the merges "Ġ t", "h e", "Ġt he" make one token


def test_qwen2_with_grouped_query_heads_and_chatml_chats(tmp_path):
    path = write_tiny_model(tmp_path / "qwen2.gguf", arch="qwen2", n_embd=64, n_head=4, n_head_kv=2,
                            chat_template=CHATML_TEMPLATE)
    reader = gguf.GGUFReader(path)
    kv, shapes = _kv(reader), _tensors(reader)
    assert kv["qwen2.attention.head_count_kv"] == 2 and kv["tokenizer.ggml.pre"] == "qwen2"
    assert shapes["blk.0.attn_k.weight"] == (32, 64) and shapes["blk.0.attn_k.bias"] == (32,)
    assert shapes["blk.0.attn_q.bias"] == (64,) and shapes["blk.0.attn_v.bias"] == (32,)
    assert kv["tokenizer.ggml.tokens"][kv["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"

    reply, _, _ = _chat(path, MESSAGES)
    assert reply["usage"]["completion_tokens"] >= 1
    assert reply["choices"][0]["message"]["role"] == "assistant"


def test_llama_with_grouped_query_heads_a_padded_vocabulary_and_a_tied_head_chats(tmp_path):
    path = write_tiny_model(tmp_path / "llama.gguf", n_embd=64, n_head=8, n_head_kv=2, n_vocab=1000,
                            tied_output=True)
    reader = gguf.GGUFReader(path)
    kv, shapes = _kv(reader), _tensors(reader)
    assert len(kv["tokenizer.ggml.tokens"]) == 1000 and kv["tokenizer.ggml.tokens"][-1] == "<filler_999>"
    assert shapes["token_embd.weight"] == (1000, 64) and "output.weight" not in shapes
    assert shapes["blk.0.attn_v.weight"] == (16, 64)

    reply, _, _ = _chat(path, MESSAGES)
    assert reply["usage"]["completion_tokens"] >= 1


def test_a_bpe_vocabulary_padded_to_a_real_size_loads(tmp_path):
    """Qwen2.5's vocabulary size: filler tokens must be valid byte-level text, or llama.cpp cannot print them."""
    path = write_tiny_model(tmp_path / "wide.gguf", arch="qwen2", n_embd=32, n_head=2, n_layer=1, n_ff=64,
                            n_vocab=151_936)
    reply, _, _ = _chat(path, MESSAGES)
    assert reply["usage"]["completion_tokens"] >= 1


def test_vocabularies():
    assert len(spm_vocabulary()) == 260
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256 and table[ord(" ")] == "Ġ" and table[ord("a")] == "a"
    vocab = bpe_vocabulary(("<|endoftext|>", "<|im_end|>"), eos="<|im_end|>")
    assert vocab.tokens[vocab.eos_id] == "<|im_end|>" and vocab.tokens[vocab.bos_id] == "<|endoftext|>"
    assert all(" " in merge for merge in vocab.merges) and len(set(vocab.tokens)) == len(vocab)
    with pytest.raises(ValueError, match="smaller than"):
        vocab.padded(100)
    with pytest.raises(ValueError, match="must be among"):
        bpe_vocabulary(("<|endoftext|>",), eos="</s>")


def test_bad_shapes_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="multiple of n_head"):
        write_tiny_model(tmp_path / "a.gguf", n_head=4, n_head_kv=3)
    with pytest.raises(ValueError, match="phi2 has no tied output"):
        write_tiny_model(tmp_path / "b.gguf", arch="phi2", tied_output=True)
    with pytest.raises(ValueError, match="unknown architecture"):
        write_tiny_model(tmp_path / "c.gguf", arch="gpt2")
    assert list(tmp_path.iterdir()) == []


def test_matrices_drawn_in_chunks_equal_one_whole_draw():
    """What keeps a 1B-shaped file's memory at one tensor, and the default file's bytes unchanged."""
    rows, cols = 1100, 4096  # 4.5M values: two chunks
    chunked = _materialize(_Tensor("w", (rows, cols), "normal"), np.random.default_rng(3))
    whole = (np.random.default_rng(3).standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
    assert np.array_equal(chunked, whole)


def test_cli_writes_each_architecture(tmp_path):
    for arch in ("phi2", "qwen2"):
        proc = subprocess.run([sys.executable, "-W", "error", "-m", "jenova_fast.finetune.tiny_model",
                               str(tmp_path / f"{arch}.gguf"), "--arch", arch, "--n-head-kv", "2"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "wrote" in proc.stdout
        assert _kv(gguf.GGUFReader(tmp_path / f"{arch}.gguf"))["general.architecture"] == arch
