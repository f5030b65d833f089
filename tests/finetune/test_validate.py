"""Every check that runs before training fires on its own bad input, with a message naming the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from jenova_fast.finetune import FinetuneConfig, FinetuneError, finetune, working_copy
from jenova_fast.finetune.validate import check_context, check_tokens, inspect_model
from tests.finetune.conftest import chat_records, write_jsonl


def _fails(match: str, fn, *args, **kwargs) -> None:
    with pytest.raises(FinetuneError, match=match):
        fn(*args, **kwargs)


def test_good_tiny_base_passes(tiny_base):
    info = inspect_model(tiny_base)
    assert (info.architecture, info.n_vocab, info.n_layer, info.types.n_f32) == ("llama", 260, 2, 21)


def test_missing_file(tmp_path):
    _fails("cannot read the model", inspect_model, tmp_path / "nope.gguf")


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "phi-2.bin"
    bad.write_bytes(b"PK\x03\x04 a zip, not a model")
    _fails("not a GGUF file.*convert_hf_to_gguf", inspect_model, bad)


def test_truncated_gguf(tmp_path, tiny_base):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_base.read_bytes()[:3000])
    _fails("damaged or truncated", inspect_model, cut)


def _gguf_with_arch(path: Path, arch: str, tokens: list[str]) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    if tokens:
        writer.add_token_list(tokens)
    writer.add_tensor("blk.0.attn_qkv.weight", np.zeros((4, 4), dtype=np.float32))
    writer.add_tensor("output.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_model_without_vocabulary(tmp_path):
    _fails("no tokenizer.ggml.tokens", inspect_model, _gguf_with_arch(tmp_path / "x.gguf", "llama", []))


@pytest.mark.parametrize("n_ctx", [0, 100, 300, 513])
def test_context_must_be_a_multiple_of_256(n_ctx):
    _fails("multiple of 256", check_context, n_ctx)


def test_ctx_batch_ubatch_must_match():
    check_context(512, 512, 512)
    _fails("K and V projections would get no gradient", check_context, 512, 512, 256)


def test_too_few_tokens_for_one_step():
    check_tokens(Path("t.jsonl"), 257, 257, 256)
    _fails("training split has 256 tokens.*needs 257", check_tokens, Path("t.jsonl"), 256, 5000, 256)
    _fails("held-out split has 100 tokens.*raise --eval-fraction", check_tokens, Path("t.jsonl"), 5000, 100, 256)


def _config(tmp_path: Path, base: Path, data: Path, **kw) -> FinetuneConfig:
    return FinetuneConfig(base=base, data=data, out=tmp_path / "models" / "jenova.gguf", n_ctx=256,
                          report=tmp_path / "r.json", **kw)


def test_no_usable_records_and_bad_lines_counted(tmp_path, tiny_base, caplog):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"text": "no messages"}, {"messages": [{"role": "user"}]}],
                       extra_lines=("{not json", '{"messages": [{"content": "no role"}]}'))
    with caplog.at_level("WARNING"):
        _fails("no usable chat records \\(4 bad lines\\)", finetune, _config(tmp_path, tiny_base, data))
    assert caplog.text.count("skipped") == 4 and "bad.jsonl:3: skipped, not valid JSON" in caplog.text


def test_missing_data_file(tmp_path, tiny_base):
    _fails("cannot read the training data.*jenova-fast prepare", finetune,
           _config(tmp_path, tiny_base, tmp_path / "missing.jsonl"))


def test_base_without_chat_template_offers_template_flag(tmp_path):
    from jenova_fast.finetune.tiny_model import write_tiny_model

    base = write_tiny_model(tmp_path / "no-template.gguf", chat_template=None)
    data = write_jsonl(tmp_path / "t.jsonl", chat_records(20))
    _fails("no tokenizer.chat_template; pass --template NAME \\(chatml", finetune, _config(tmp_path, base, data))
    _fails("--template 'nope': neither a known name", finetune, _config(tmp_path, base, data, template="nope"))


def test_too_little_data_is_caught_before_any_working_copy(tmp_path, q8_base):
    base = tmp_path / "fresh-q8.gguf"  # a quantized base needs a working copy: none may be written
    base.write_bytes(q8_base.read_bytes())
    one = write_jsonl(tmp_path / "one.jsonl", chat_records(1))
    _fails("only 1 records: too few to hold out 50%", finetune, _config(tmp_path, base, one, eval_fraction=0.5))
    _fails("training split has \\d+ tokens, but one step at --ctx 256 needs 257", finetune,
           _config(tmp_path, base, one, packing="stream"))
    _fails("--packing 'rows'", finetune, _config(tmp_path, base, one, packing="rows"))
    assert list(working_copy.cache_dir().glob("fresh-q8-*")) == []


@pytest.mark.parametrize(("field", "value", "match"), [
    ("eval_fraction", 0.0, "--eval-fraction 0.0: must be between 0 and 1"),
    ("eval_fraction", 1.5, "--eval-fraction 1.5"),
    ("epochs", 0, "--epochs 0: must be at least 1"),
    ("trainer", "axolotl", "--trainer 'axolotl': use one of"),
    ("n_ctx", 300, "multiple of 256"),
])
def test_bad_settings(tmp_path, tiny_base, chat_jsonl, field, value, match):
    config = _config(tmp_path, tiny_base, chat_jsonl)
    setattr(config, field, value)
    _fails(match, finetune, config)


def test_blocks_of_phi2_refused_before_any_working_copy(tmp_path, chat_jsonl):
    phi2 = _gguf_with_arch(tmp_path / "phi-2.Q4_K_M.gguf", "phi2", ["a", "b"])
    _fails("LayerNorm and GELU.*use --train head", finetune,
           _config(tmp_path, phi2, chat_jsonl, train="all", engine="stock"))
    assert list(working_copy.cache_dir().glob("phi-2.Q4_K_M-*")) == []


def test_gradient_checkpointing_on_the_stock_engine_is_refused_up_front(tmp_path, tiny_base, chat_jsonl):
    before = set(working_copy.cache_dir().glob("*"))
    _fails("--gradient-checkpointing needs .* patched engine", finetune,
           _config(tmp_path, tiny_base, chat_jsonl, engine="stock", gradient_checkpointing=True))
    assert set(working_copy.cache_dir().glob("*")) == before  # refused before any working copy


def test_llama_finetune_program_missing_or_not_executable(tmp_path, tiny_base, chat_jsonl, monkeypatch):
    monkeypatch.delenv("JENOVA_LLAMA_FINETUNE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-finetune anywhere
    _fails("no program found; pass --llama-finetune PATH", finetune,
           _config(tmp_path, tiny_base, chat_jsonl, trainer="llama-finetune"))
    script = tmp_path / "llama-finetune.txt"
    script.write_text("not a program")
    os.chmod(script, 0o644)
    _fails("not an executable llama-finetune", finetune,
           _config(tmp_path, tiny_base, chat_jsonl, trainer="llama-finetune", llama_finetune=script))


def test_a_result_worse_than_the_base_is_never_written(tmp_path, tiny_base, small_chat_jsonl):
    out = tmp_path / "models" / "jenova.gguf"
    out.parent.mkdir()
    out.write_bytes(tiny_base.read_bytes())  # the model installed before
    config = FinetuneConfig(base=tiny_base, data=small_chat_jsonl, out=out, n_ctx=256, lr=50.0, epochs=1,
                            eval_fraction=0.1, report=tmp_path / "r.json")
    _fails("diverged|worse than the base.*lower --lr", finetune, config)
    assert out.read_bytes() == tiny_base.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["jenova.gguf"]
