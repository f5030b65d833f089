"""The tiny model, GGUF rewriting, metadata restoration and working copies, on real files."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from jenova_fast.finetune.metadata import open_reader, read_kv, restore_metadata, rewrite_gguf  # noqa: E402
from jenova_fast.finetune.tiny_model import TINY_CHAT_TEMPLATE, main, write_tiny_model  # noqa: E402
from jenova_fast.finetune.validate import tensor_types  # noqa: E402
from jenova_fast.finetune.working_copy import plan, write_working_copy  # noqa: E402


def dequantize_to_f32(src, dst):
    """A working copy in which every tensor is trained: all F32."""
    reader = open_reader(src)
    return write_working_copy(src, plan(reader, {t.name for t in reader.tensors}), dst)


def _tensors(path):
    return {t.name: np.array(t.data) for t in open_reader(path).tensors}


def test_tiny_model_is_a_complete_llama(tiny_base):
    kv = read_kv(open_reader(tiny_base))
    assert kv["general.architecture"] == "llama" and kv["tokenizer.ggml.model"] == "llama"
    assert len(kv["tokenizer.ggml.tokens"]) == 260 and kv["tokenizer.ggml.tokens"][-1] == "▁"
    assert kv["tokenizer.chat_template"] == TINY_CHAT_TEMPLATE
    tensors = _tensors(tiny_base)
    assert tensors["output.weight"].shape == (260, 64) and len(tensors) == 21
    assert tensor_types(open_reader(tiny_base)).other_types == {}


def test_tiny_model_cli_is_seeded(tmp_path, capsys):
    assert main([str(tmp_path / "a.gguf"), "--seed", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    write_tiny_model(tmp_path / "b.gguf", seed=5)
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_rewrite_without_changes_keeps_every_key_and_tensor(tmp_path, tiny_base):
    copy = rewrite_gguf(tiny_base, tmp_path / "copy.gguf")
    assert read_kv(open_reader(copy)) == read_kv(open_reader(tiny_base))
    a, b = _tensors(tiny_base), _tensors(copy)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_restore_puts_back_template_and_context_length(tmp_path, tiny_base):
    # what llama.cpp's trainer writes: no chat template, context_length = the training n_ctx
    like_trained = rewrite_gguf(
        tiny_base, tmp_path / "trained.gguf", drop={"tokenizer.chat_template"},
        set_from={"llama.context_length": (256, gguf.GGUFValueType.UINT32)})
    kv = read_kv(open_reader(like_trained))
    assert "tokenizer.chat_template" not in kv and kv["llama.context_length"] == 256
    keys = restore_metadata(like_trained, tiny_base, tmp_path / "restored.gguf")
    assert keys == ["llama.context_length", "tokenizer.chat_template"]
    restored = read_kv(open_reader(tmp_path / "restored.gguf"))
    assert restored == read_kv(open_reader(tiny_base))


def test_q8_0_dequantizes_to_f32_within_quantization_error(tmp_path, tiny_base, q8_base):
    assert tensor_types(open_reader(q8_base)).other_types == {"Q8_0": 16}
    out = dequantize_to_f32(q8_base, tmp_path / "f32.gguf")
    types = tensor_types(open_reader(out))
    assert types.other_types == {} and types.n_f32 == 21
    original, restored = _tensors(tiny_base), _tensors(out)
    for name, weights in original.items():
        assert restored[name].shape == weights.shape
        scale = np.abs(weights).max()
        assert np.abs(restored[name] - weights).max() <= scale / 127 + 1e-7, name


def test_q4_k_m_from_llama_cpp_dequantizes(tmp_path, q4k_base):
    pytest.importorskip("llama_cpp")
    types = tensor_types(open_reader(q4k_base)).other_types
    assert "Q4_K" in types  # real K-quant blocks, as in the seed's phi-2.Q4_K_M.gguf
    out = dequantize_to_f32(q4k_base, tmp_path / "f32.gguf")
    tensors = _tensors(out)
    assert tensor_types(open_reader(out)).other_types == {}
    assert tensors["blk.0.attn_q.weight"].shape == (256, 256)
    assert np.isfinite(tensors["blk.0.attn_q.weight"]).all() and tensors["blk.0.attn_q.weight"].std() > 0


def test_unsupported_tensor_type_names_the_fix(tmp_path):
    from jenova_fast.finetune import FinetuneError

    writer = gguf.GGUFWriter(str(tmp_path / "i32.gguf"), "llama")
    writer.add_tensor("output.weight", np.arange(64, dtype=np.int32).reshape(8, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(FinetuneError, match=r"I32 would have to be dequantized.*--outtype f32"):
        dequantize_to_f32(tmp_path / "i32.gguf", tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
