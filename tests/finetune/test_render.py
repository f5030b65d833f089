"""Records are rendered with the model's own template and end-of-turn markers become real special tokens."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from jenova_fast.finetune import render, runtime
from jenova_fast.finetune.tiny_model import TINY_CHAT_TEMPLATE
from tests.finetune.conftest import chat_records

BOS, EOS = 1, 2


@pytest.fixture(scope="module")
def vocab(tiny_base):
    with runtime.load_model(tiny_base, vocab_only=True) as model:
        yield model


def test_special_tokens_of_the_tiny_model(vocab):
    assert runtime.special_tokens(vocab) == (BOS, EOS, True, "<s>", "</s>")


def test_end_of_turn_is_the_real_eos_token(vocab):
    renderer = render.Renderer(TINY_CHAT_TEMPLATE, "<s>", "</s>")
    text = renderer.conversation(chat_records(1)[0]["messages"])
    assert text.startswith("<|user|>\nWhat have you learned about") and text.count("</s>") == 2
    parsed = runtime.tokenize(vocab, text)
    literal = runtime.tokenize(vocab, text, parse_special=False)
    assert list(parsed).count(EOS) == 2
    assert EOS not in literal  # what llama-finetune would train on: `</s>` as four byte tokens
    assert len(literal) > len(parsed)


def test_prompt_ends_ready_for_the_assistant():
    renderer = render.Renderer(TINY_CHAT_TEMPLATE, "<s>", "</s>")
    messages = chat_records(1)[0]["messages"]
    assert renderer.prompt(messages) == f"<|user|>\n{messages[0]['content']}</s>\n<|assistant|>\n"


def test_split_is_by_record_and_every_record_starts_with_one_bos(vocab):
    records = [r["messages"] for r in chat_records(50)]
    renderer = render.Renderer(TINY_CHAT_TEMPLATE, "<s>", "</s>")
    split = render.split_and_tokenize(records, renderer, lambda t: runtime.tokenize(vocab, t), bos=BOS,
                                      add_bos=True, eval_fraction=0.1, seed=3)
    assert (split.n_train_records, split.n_heldout_records) == (45, 5)
    assert int((split.train == BOS).sum()) == 45 and int((split.heldout == BOS).sum()) == 5
    assert int((split.train == EOS).sum()) == 90
    assert len(split.heldout_conversations) == 5 and all(c in records for c in split.heldout_conversations)
    assert not split.in_sample and split.unmasked == 0


def test_a_small_store_is_trained_whole_and_measured_in_sample(vocab):
    records = [r["messages"] for r in chat_records(12)]
    renderer = render.Renderer(TINY_CHAT_TEMPLATE, "<s>", "</s>")
    split = render.split_and_tokenize(records, renderer, lambda t: runtime.tokenize(vocab, t), bos=BOS,
                                      add_bos=True, eval_fraction=None)
    assert split.in_sample and split.n_train_records == 12 and split.n_heldout_records == 0
    assert split.heldout_records is split.train_records


def _detokenize(vocab, tokens) -> str:
    lc = runtime.llama_cpp_module()
    buf = ctypes.create_string_buffer(4096)
    n = lc.llama_detokenize(lc.llama_model_get_vocab(vocab), (lc.llama_token * len(tokens))(*tokens), len(tokens),
                            buf, len(buf), False, True)
    return buf.raw[:n].decode()


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_only_the_answers_and_their_end_of_turn_are_trained(vocab, system):
    renderer = render.Renderer(TINY_CHAT_TEMPLATE, "<s>", "</s>", system=system)
    messages = [{"role": "user", "content": "Name my dog."}, {"role": "assistant", "content": "Biscuit."},
                {"role": "user", "content": "And my cat?"}, {"role": "assistant", "content": "Olga, a tabby."}]
    text, spans = renderer.answer_spans(messages)
    assert text.startswith("<|system|>\nBe brief.</s>\n<|user|>" if system else "<|user|>\nName my dog.")
    assert [text[a:b] for a, b in spans] == ["Biscuit.</s>", "Olga, a tabby.</s>"]
    record = render.tokenize_record(text, spans, lambda t: runtime.tokenize(vocab, t), bos=BOS, add_bos=True)
    assert record.tokens[0] == BOS and len(record.tokens) == len(record.trained)
    edges = np.flatnonzero(np.diff(record.trained.astype(int)) != 0) + 1  # where trained runs start and end
    runs = [record.tokens[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True)]
    assert [_detokenize(vocab, list(r)) for r in runs] == ["Biscuit.</s>", "Olga, a tabby.</s>"]
    assert render.Renderer(TINY_CHAT_TEMPLATE, "<s>", "</s>", system="x").prompt(messages[:1]).startswith("<|system|>")


def test_chatml_answers_without_the_template_newline(tmp_path):
    from jenova_fast.finetune.tiny_model import CHATML_TEMPLATE, write_tiny_model

    path = write_tiny_model(tmp_path / "q.gguf", arch="qwen2", chat_template=CHATML_TEMPLATE)
    with runtime.load_model(path, vocab_only=True) as model:
        bos, eos, add_bos, bos_text, eos_text = runtime.special_tokens(model)
        renderer = render.Renderer(CHATML_TEMPLATE, bos_text, eos_text, system="You are Jenova.")
        text, spans = renderer.answer_spans([{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Hello there"}])
        record = render.tokenize_record(text, spans, lambda t: runtime.tokenize(model, t), bos=bos, add_bos=add_bos)
        answer = list(record.tokens[record.trained])
        assert _detokenize(model, answer) == "Hello there<|im_end|>" and answer[-1] == eos
        assert "You are Jenova." in text and not record.trained[: text.count("<|im_start|>")].any()


def test_a_template_that_renders_turns_differently_is_trained_whole(vocab, caplog):
    template = "{% for m in messages %}{{ m['content'] }}{% if loop.last %}!{% endif %}{% endfor %}"
    renderer = render.Renderer(template, "<s>", "</s>")
    with caplog.at_level("WARNING"):
        split = render.split_and_tokenize([r["messages"] for r in chat_records(30)], renderer,
                                          lambda t: runtime.tokenize(vocab, t), bos=BOS, add_bos=True,
                                          eval_fraction=None)
    assert split.unmasked == 30 and "cannot be told apart" in caplog.text
    assert all(r.trained[1:].all() and not r.trained[0] for r in split.train_records)


def test_template_that_writes_bos_itself_gets_no_second_one(vocab):
    template = "{{ bos_token }}" + TINY_CHAT_TEMPLATE
    renderer = render.Renderer(template, "<s>", "</s>")
    records = [r["messages"] for r in chat_records(10)]
    split = render.split_and_tokenize(records, renderer, lambda t: runtime.tokenize(vocab, t), bos=BOS,
                                      add_bos=True, eval_fraction=0.2)
    assert int((split.train == BOS).sum()) == 8
    assert not np.any((split.train[:-1] == BOS) & (split.train[1:] == BOS))


def test_records_the_template_refuses_are_skipped_and_counted(vocab, caplog):
    renderer = render.Renderer(render.named_templates()["mistral-instruct"], "<s>", "</s>")
    records = [r["messages"] for r in chat_records(10)]
    records[0] = [{"role": "assistant", "content": "roles must alternate"}]
    with caplog.at_level("WARNING"):
        split = render.split_and_tokenize(records, renderer, lambda t: runtime.tokenize(vocab, t), bos=BOS,
                                          add_bos=True, eval_fraction=0.2, seed=0)
    assert split.skipped_render == 1 and "chat template refused it" in caplog.text
    assert len(split.train_texts) + int((split.heldout == BOS).sum()) == 9  # every other record, once
    assert "roles must alternate" not in "".join(split.train_texts)


def test_named_and_file_templates(tmp_path):
    names = render.named_templates()
    assert {"chatml", "llama-3", "mistral-instruct", "zephyr"} <= set(names)
    assert render.resolve_template(tmp_path, None, "chatml") == names["chatml"]
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{{ messages[0]['content'] }}")
    assert render.resolve_template(tmp_path, "from gguf", str(jinja)) == "{{ messages[0]['content'] }}"
    assert render.resolve_template(tmp_path, "from gguf", None) == "from gguf"


def test_windows_are_what_llama_cpp_cuts():
    stream = np.arange(1000, dtype=np.int32)
    rows = render.windows(stream, 256, 128)
    assert rows.shape == ((1000 - 257) // 128 + 1, 257)
    assert rows[1, 0] == 128 and rows[-1, -1] <= 999
    assert render.windows(stream[:257], 256, 256).shape == (1, 257)
    assert render.windows(stream[:256], 256, 256).shape == (0, 257)
