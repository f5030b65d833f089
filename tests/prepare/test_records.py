"""Point 1: the reference's records, exactly, and a well-formed JSONL file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import jenova_fast
from jenova_fast.prepare.records import insight_messages
from tests.prepare.reference import canonical, read_lines, reference_records


def test_record_set_equals_the_reference_on_the_demo_store(impl, demo_store, tmp_path):
    root, manifest = demo_store
    out = tmp_path / "train.jsonl"
    report = jenova_fast.prepare(root, out)
    records = read_lines(out)
    assert canonical(records) == canonical(reference_records(root))
    assert report.records == report.insight_records == len(records) == manifest.records
    assert report.implementation == impl


def test_skips_match_what_the_demo_store_planted(impl, demo_store, tmp_path):
    root, manifest = demo_store
    report = jenova_fast.prepare(root, tmp_path / "train.jsonl")
    planted = {reason: sorted(str(root / p) for p in paths) for reason, paths in manifest.corrupt.items()}
    found: dict[str, list[str]] = {}
    for skip in report.skips:
        found.setdefault(skip.reason.value, []).append(skip.path)
    assert {k: sorted(v) for k, v in found.items()} == planted
    assert report.files_seen == manifest.insights
    assert report.ignored == sum(1 for _ in root.rglob("concerns.json")) > 0


def test_output_is_compact_utf8_json_lines(impl, tmp_path):
    store = tmp_path / "store" / "alice" / "café ☕"
    store.mkdir(parents=True)
    insight = {"topic": "café ☕", "content": 'says "hi"\n\tthen \\ leaves 😀\u0001\u007f\u2028', "user": "josé"}
    (store / "insight_1.json").write_text(json.dumps(insight, indent=4, ensure_ascii=True), encoding="ascii")
    out = tmp_path / "train.jsonl"
    jenova_fast.prepare(tmp_path / "store", out)
    data = out.read_bytes()
    expected = insight_messages(insight["topic"], insight["content"], insight["user"])
    assert data == (json.dumps(expected, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    assert "😀".encode() in data and b"\\ud83d" not in data  # surrogate pair escapes became one character
    assert json.loads(data) == expected


def test_defaults_and_wording(impl, tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    (store / "insight_a.json").write_text(json.dumps({"content": "c1"}), encoding="utf-8")
    (store / "insight_b.json").write_text(json.dumps({"content": "c2", "topic": None, "user": None}), encoding="utf-8")
    out = tmp_path / "o.jsonl"
    jenova_fast.prepare(store, out)
    a, b = read_lines(out)
    assert b["messages"][0] == a["messages"][0]  # null topic/user count as absent
    assert b["messages"][1]["content"].endswith("that: c2") and b["messages"][1]["content"].startswith(
        "Of course, user."
    )
    assert a["messages"][0] == {
        "role": "user",
        "content": "Hey Jenova, I've been thinking about our conversations on 'general'. Can you synthesize "
        "your understanding of this for me? What have you learned about my perspective on it?",
    }
    assert a["messages"][1] == {
        "role": "assistant",
        "content": "Of course, user. Based on our discussions, I've developed an insight regarding 'general'. "
        "My understanding is that: c1",
    }


def test_concerns_json_is_never_a_record(impl, tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    concerns = {"content": {"description": "x", "related_concerns": []}, "topic": "t", "user": "u"}
    (store / "concerns.json").write_text(json.dumps({"content": "looks like an insight", **concerns}))
    report = jenova_fast.prepare(store, tmp_path / "o.jsonl")
    assert report.records == 0 and report.ignored == 1 and report.skips == []


def test_duplicate_keys_last_one_wins(impl, tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    (store / "i.json").write_bytes(b'{"content": "first", "topic": "a", "content": "second", "\\u0074opic": "b"}')
    out = tmp_path / "o.jsonl"
    jenova_fast.prepare(store, out)
    [record] = read_lines(out)
    assert record == insight_messages("b", "second", "user")


def test_history_pairs_follow_the_insights(impl, tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    (store / "i.json").write_text(json.dumps({"content": "insight", "topic": "t"}))
    history = tmp_path / "history.jsonl"
    lines = [
        json.dumps({"user_message": "hi 😀", "ai_message": "hello"}),
        "",
        "{not json",
        json.dumps({"user_message": "", "ai_message": "x"}),
        json.dumps({"user_message": "only"}),
        json.dumps({"user_message": 3, "ai_message": "x"}),
        json.dumps(["a", "b"]),
        json.dumps({"user_message": "second", "ai_message": "pair\n"}),
    ]
    history.write_bytes(("\n".join(lines) + "\n").encode() + b'{"user_message": "\xff", "ai_message": "x"}\n')
    out = tmp_path / "o.jsonl"
    report = jenova_fast.prepare(store, out, include_history=history)
    records = read_lines(out)
    assert [r["messages"][0]["content"] for r in records[1:]] == ["hi 😀", "second"]
    assert records[2]["messages"][1] == {"role": "assistant", "content": "pair\n"}
    assert (report.insight_records, report.history_records, report.records) == (1, 2, 3)
    assert [(s.path, s.reason.value) for s in report.skips] == [
        (f"{history}:3", "invalid_json"),
        (f"{history}:4", "incomplete_pair"),
        (f"{history}:5", "incomplete_pair"),
        (f"{history}:6", "wrong_type"),
        (f"{history}:7", "not_object"),
        (f"{history}:9", "invalid_utf8"),
    ]


def test_all_three_layouts_are_read(impl, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    layouts = {
        "v1.0": home / ".jenova-ai" / "insights" / "topic a",
        "v1.1": home / ".jenova-ai" / "insights" / "bob" / "topic b",
        "v1.2": home / ".jenova-ai" / "users" / "alice" / "insights" / "alice" / "topic c",
    }
    for name, folder in layouts.items():
        folder.mkdir(parents=True)
        (folder / "insight_20250101_000000.json").write_text(json.dumps({"content": name}, indent=4))
    contents = lambda path: [r["messages"][1]["content"].rsplit(": ", 1)[1] for r in read_lines(path)]  # noqa: E731
    jenova_fast.prepare(output=tmp_path / "all.jsonl", all_users=True)
    assert contents(tmp_path / "all.jsonl") == ["v1.2", "v1.1", "v1.0"]
    jenova_fast.prepare(output=tmp_path / "alice.jsonl", user="alice")
    assert contents(tmp_path / "alice.jsonl") == ["v1.2"]
    jenova_fast.prepare(output=tmp_path / "bob.jsonl", user="bob")
    assert contents(tmp_path / "bob.jsonl") == ["v1.1"]


def test_iter_records_yields_what_prepare_writes(impl, demo_store, tmp_path):
    root, _ = demo_store
    out = tmp_path / "train.jsonl"
    jenova_fast.prepare(root, out)
    assert list(jenova_fast.iter_records(root)) == read_lines(out)


def test_iter_records_can_stop_early(impl, demo_store):
    root, _ = demo_store
    it = jenova_fast.iter_records(root)
    first = next(it)
    it.close()
    assert first["messages"][0]["role"] == "user"


def test_reference_helper_is_not_vacuous(demo_store):
    root, manifest = demo_store
    assert len(reference_records(Path(root))) == manifest.records > 1000


def test_library_never_prints_it_logs_and_reports_progress(impl, demo_store, tmp_path, capfd, caplog):
    root, manifest = demo_store
    seen = []
    with caplog.at_level("INFO", logger="jenova_fast.prepare"):
        report = jenova_fast.prepare(root, tmp_path / "o.jsonl", progress=seen.append)
    assert capfd.readouterr() == ("", "")
    skipped_logs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(skipped_logs) == len(report.skips) == sum(len(p) for p in manifest.corrupt.values())
    assert seen and seen[-1].files_done == seen[-1].files_total == manifest.insights
    assert all(a.files_done <= b.files_done for a, b in itertools.pairwise(seen))


def test_files_around_and_far_beyond_the_read_buffer_are_read_whole(impl, tmp_path):
    """The native reader reads into a 64 KiB buffer and only stats a file that fills it."""
    store = tmp_path / "s"
    store.mkdir()
    overhead = len(json.dumps({"content": ""}))
    sizes = [65535, 65536, 65537, 131072, 3_000_000]
    for size in sizes:
        half, odd = divmod(size - overhead, 2)  # two-byte characters, so a buffer edge can split one
        doc = json.dumps({"content": "é" * half + "x" * odd}, ensure_ascii=False)
        (store / f"{size:08d}.json").write_bytes(doc.encode())
    assert sorted(p.stat().st_size for p in store.iterdir()) == sizes
    report = jenova_fast.prepare(store, tmp_path / "o.jsonl", max_file_bytes=2_000_000)
    assert {Path(s.path).name: s.reason.value for s in report.skips} == {"03000000.json": "too_large"}
    contents = [r["messages"][1]["content"].rsplit(": ", 1)[1] for r in read_lines(tmp_path / "o.jsonl")]
    assert [len(c.encode()) + overhead for c in contents] == sizes[:-1]
    assert report.bytes_read == sum(sizes[:-1])
