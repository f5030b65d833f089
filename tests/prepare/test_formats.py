"""--format and --with-metadata: every layout carries the reference's question and answer, native and pure
write the same bytes, and `text` is the model's own chat template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jenova_fast
from jenova_fast.prepare import _pipeline, _pipeline_py
from jenova_fast.prepare.records import FORMATS
from jenova_fast.prepare.templates import ModelText, record_messages
from tests.conftest import run_cli
from tests.prepare.reference import read_lines

STRUCTURED = FORMATS[:4]
KEYS = {
    "messages": ["messages"],
    "sharegpt": ["conversations"],
    "alpaca": ["instruction", "input", "output"],
    "prompt-completion": ["prompt", "completion"],
}


@pytest.fixture(scope="module")
def small_store(demo_store, tmp_path_factory) -> Path:
    """200 files of the demo store (every layout, some corrupt), plus a lone surrogate and a non-UTF-8 name."""
    root, _ = demo_store
    store = tmp_path_factory.mktemp("formats") / "store"
    for path in sorted(root.rglob("*.json"))[:200]:
        target = store / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (store / "odd").mkdir()
    (store / "odd" / "lone.json").write_bytes(b'{"content": "x \\ud800", "timestamp": "t\\udfff", "n": NaN}')
    (store / "odd").joinpath(os.fsdecode(b"caf\xe9.json")).write_bytes(b'{"content": "latin-1 name"}')
    return store


def run_both(store: Path, **options) -> bytes:
    outputs = []
    for module in (_pipeline, _pipeline_py):
        chunks: list[bytes] = []
        module.run([str(store)], max_bytes=1 << 20, follow_symlinks=False, threads=2, write=chunks.append,
                   on_skip=lambda s: None, progress=lambda *a: None, **options)
        outputs.append(b"".join(chunks))
    assert outputs[0] == outputs[1]
    outputs[0].decode("utf-8")  # valid UTF-8 whatever the input held
    return outputs[0]


@pytest.mark.parametrize("fmt", STRUCTURED)
@pytest.mark.parametrize("metadata", [False, True])
def test_each_format_holds_the_same_conversation(small_store, fmt, metadata):
    plain = [json.loads(line) for line in run_both(small_store).splitlines()]
    lines = [json.loads(line) for line in run_both(small_store, fmt=fmt, metadata=metadata).splitlines()]
    assert len(lines) == len(plain) > 150
    for record, reference in zip(lines, plain, strict=True):
        assert list(record) == KEYS[fmt] + (["metadata"] if metadata else [])
        assert record_messages(record) == reference["messages"]


def test_metadata_names_source_path_and_timestamp(impl, small_store, tmp_path, demo_store):
    out = tmp_path / "o.jsonl"
    jenova_fast.prepare(small_store, out, with_metadata=True)
    records = read_lines(out)
    by_path = {r["metadata"]["path"]: r["metadata"] for r in records}
    assert all(m["source"] == "insights" for m in by_path.values())
    assert by_path["odd/lone.json"]["timestamp"] == "t\udfff"
    assert os.fsencode(next(p for p in by_path if p.startswith("odd/caf"))) == b"odd/caf\xe9.json"
    for path, meta in by_path.items():
        if path.startswith("odd/"):
            continue
        on_disk = json.loads((small_store / path).read_bytes())
        assert meta["timestamp"] == on_disk.get("timestamp")


@pytest.mark.parametrize("fmt", STRUCTURED)
def test_cli_writes_each_format(impl, small_store, tmp_path, fmt):
    out = tmp_path / "o.jsonl"
    result = run_cli("prepare", "--insights-dir", small_store, "--output", out, "--format", fmt, "--quiet")
    assert result.returncode == 0, result.stderr
    assert list(read_lines(out)[0]) == KEYS[fmt]


def test_text_is_the_models_chat_template(impl, small_store, tmp_path, tiny_gguf):
    plain, text = tmp_path / "plain.jsonl", tmp_path / "text.jsonl"
    jenova_fast.prepare(small_store, plain)
    report = jenova_fast.prepare(small_store, text, fmt="text", template_from=tiny_gguf, with_metadata=True)
    model = ModelText(tiny_gguf)
    rendered = read_lines(text)
    assert report.records == len(rendered)
    for record, reference in zip(rendered, read_lines(plain), strict=True):
        assert list(record) == ["text", "metadata"]
        assert record["text"] == model.render(reference["messages"])
        assert record["text"].startswith("<|user|>\n") and "</s>" in record["text"]


def test_text_needs_a_template_and_the_extra(impl, small_store, tmp_path, tiny_gguf):
    result = run_cli("prepare", "--insights-dir", small_store, "--output", tmp_path / "o.jsonl", "--format", "text")
    assert result.returncode == 2 and "--template-from MODEL.gguf" in result.stderr
    missing = run_cli("prepare", "--insights-dir", small_store, "--format", "text", "--template-from", tmp_path / "x")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    code = (
        "import sys; sys.modules['llama_cpp'] = None\n"
        "from jenova_fast.prepare.cli import main\n"
        f"sys.exit(main(['--insights-dir', {str(small_store)!r}, '--output', {str(tmp_path / 'o.jsonl')!r}, "
        f"'--format', 'text', '--template-from', {str(tiny_gguf)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "pip install 'jenova-fast[finetune]'" in proc.stderr


def test_threads_do_not_change_any_option(small_store):
    outputs = set()
    for threads in (1, 2, 5):
        train: list[bytes] = []
        held: list[bytes] = []
        _pipeline.run([str(small_store)], max_bytes=1 << 20, follow_symlinks=False, threads=threads,
                      write=train.append, on_skip=lambda s: None, progress=lambda *a: None, fmt="alpaca",
                      metadata=True, eval_fraction=0.3, write_eval=held.append)
        outputs.add((b"".join(train), b"".join(held)))
    assert len(outputs) == 1


@pytest.mark.parametrize("fmt", STRUCTURED)
def test_system_opens_every_record_in_each_format(impl, small_store, tmp_path, fmt):
    plain, out, prompt = tmp_path / "plain.jsonl", tmp_path / "o.jsonl", tmp_path / "system.txt"
    prompt.write_text("You are Jenova, alex's assistant.\n", encoding="utf-8")
    jenova_fast.prepare(small_store, plain)
    result = run_cli("prepare", "--insights-dir", small_store, "--output", out, "--format", fmt, "--quiet",
                     "--system", f"@{prompt}")
    assert result.returncode == 0, result.stderr
    system = {"role": "system", "content": "You are Jenova, alex's assistant."}
    records = read_lines(out)
    assert len(records) == len(read_lines(plain))
    for record, reference in zip(records, read_lines(plain), strict=True):
        assert record_messages(record) == [system, *reference["messages"]]
        assert set(record) == set(KEYS[fmt]) | ({"system"} if fmt == "alpaca" else set())


def test_system_in_text_is_rendered_by_the_template(impl, small_store, tmp_path, tiny_gguf):
    out = tmp_path / "text.jsonl"
    jenova_fast.prepare(small_store, out, fmt="text", template_from=tiny_gguf, system="Be brief.")
    assert all(r["text"].startswith("<|system|>\nBe brief.</s>\n<|user|>\n") for r in read_lines(out))
