"""The recall benchmark's harness on a tiny model: its store prepares, trains and is asked both kinds of
question (the figures themselves come from the real SmolLM2: benchmarks/README.md)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from benchmarks import bench_quality


def test_the_harness_prepares_trains_and_asks(tmp_path, tiny_base, capsys):
    out = tmp_path / "rows.jsonl"
    assert bench_quality.main(["--model", str(tiny_base), "--keep", str(tmp_path / "work"), "--json", str(out),
                               "--", "--epochs", "2", "--system", "You are Jenova."]) == 0
    row = json.loads(out.read_text(encoding="utf-8"))
    assert row["facts"] == len(bench_quality.FACTS) == 12 and row["flags"] == "--epochs 2 --system You are Jenova."
    for key in ("own_before", "own_after", "paraphrase_before", "paraphrase_after"):
        assert 0 <= row[key] <= 12
    assert row["steps"] > 0 and row["epochs_run"] == 2 and row["choices"]["epochs"].startswith("2: given")
    assert row["report_recall"][2] == 12  # finetune's own measure asked every training question
    assert [a["fact"]["key"] for a in row["answers"]] == [f.key for f in bench_quality.FACTS]
    printed = capsys.readouterr().out
    assert printed.startswith("--epochs 2 --system You are Jenova.: own question ") and "paraphrase" in printed
    records = (tmp_path / "work" / "finetune" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(records) == 12 and all("'" in json.loads(r)["messages"][0]["content"] for r in records)


def test_a_missing_model_says_how_to_get_it(tmp_path):
    with pytest.raises(SystemExit, match=r"pass --model PATH .* or --fetch"):
        bench_quality.find_model(None, tmp_path, do_fetch=False)
