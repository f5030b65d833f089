"""--max-tokens N --tokenizer MODEL.gguf: records longer than N tokens of the model, rendered with its chat
template, are left out and named in the report; the rest are exactly what a run without the budget writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import jenova_fast
from jenova_fast.prepare.templates import ModelText
from tests.conftest import run_cli
from tests.prepare.reference import read_lines


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("budget") / "store"
    root.mkdir()
    for i in range(40):
        words = " ".join(["note"] * (5 + 7 * i))  # 5 to 278 words
        (root / f"insight_{i:02d}.json").write_text(json.dumps({"topic": "t", "content": words, "cortex_id": str(i)}))
    return root


def tokens_of(records: list[dict], model: ModelText) -> list[int]:
    return [model.count_tokens(model.render(r["messages"])) for r in records]


def test_long_records_are_left_out_and_named(impl, store, tmp_path, tiny_gguf):
    model = ModelText(tiny_gguf)
    plain_out, out = tmp_path / "plain.jsonl", tmp_path / "o.jsonl"
    jenova_fast.prepare(store, plain_out)
    plain = read_lines(plain_out)
    lengths = tokens_of(plain, model)
    budget = sorted(lengths)[25]
    report = jenova_fast.prepare(store, out, max_tokens=budget, tokenizer=tiny_gguf)
    kept = read_lines(out)
    assert kept == [r for r, n in zip(plain, lengths, strict=True) if n <= budget]
    assert out.read_bytes() == b"".join(
        line + b"\n" for line, n in zip(plain_out.read_bytes().splitlines(), lengths, strict=True) if n <= budget
    )
    too_long = sorted(r["path"] for r in report.too_long)
    assert too_long == sorted(f"insight_{i:02d}.json" for i, n in enumerate(lengths) if n > budget)
    assert all(r["tokens"] > budget and r["source"] == "insights" for r in report.too_long)
    assert report.insight_records == report.records == len(kept) and report.longest_tokens == max(lengths)


def test_budget_with_split_metadata_and_text(impl, store, tmp_path, tiny_gguf):
    out = tmp_path / "train.jsonl"
    report = jenova_fast.prepare(store, out, max_tokens=120, tokenizer=tiny_gguf, eval_fraction=0.3,
                                 with_metadata=True, fmt="text", template_from=tiny_gguf)
    model = ModelText(tiny_gguf)
    train, held = read_lines(out), read_lines(out.with_name("eval.jsonl"))
    assert all(list(r) == ["text", "metadata"] and model.count_tokens(r["text"]) <= 120 for r in train + held)
    assert len(train) + len(held) + len(report.too_long) == 40
    assert (report.records, report.eval_records) == (len(train), len(held))


def test_native_and_pure_agree(store, tmp_path, tiny_gguf, monkeypatch):
    outputs = []
    for pure in ("0", "1"):
        monkeypatch.setenv("JENOVA_FAST_PURE", pure)
        out = tmp_path / pure / "o.jsonl"
        report = jenova_fast.prepare(store, out, max_tokens=100, tokenizer=tiny_gguf, fmt="alpaca")
        outputs.append((out.read_bytes(), report.too_long))
    assert outputs[0] == outputs[1]


def test_cli_budget_and_its_errors(impl, store, tmp_path, tiny_gguf):
    report_file = tmp_path / "r.json"
    ok = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "o.jsonl", "--max-tokens", "100",
                 "--tokenizer", tiny_gguf, "--report", report_file)
    assert ok.returncode == 0, ok.stderr
    assert "over --max-tokens left out" in ok.stdout
    assert json.loads(report_file.read_text())["too_long"]
    no_tokenizer = run_cli("prepare", "--insights-dir", store, "--max-tokens", "100")
    assert no_tokenizer.returncode == 2 and "--tokenizer MODEL.gguf" in no_tokenizer.stderr
