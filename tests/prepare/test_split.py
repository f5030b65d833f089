"""--eval-fraction: a held-out set chosen by a hash of each insight's identity, stable between runs and as
the store grows, the same from both implementations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jenova_fast
from jenova_fast.demo import write_store
from jenova_fast.prepare import _pipeline, _pipeline_py
from tests.conftest import run_cli
from tests.prepare.reference import canonical, read_lines


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split") / "store"
    write_store(root, 400, seed=3)
    return root


def split(store: Path, out: Path, fraction: float) -> tuple[list[dict], list[dict]]:
    report = jenova_fast.prepare(store, out, eval_fraction=fraction)
    train, held = read_lines(out), read_lines(out.with_name("eval.jsonl"))
    assert (report.insight_records, report.eval_records) == (len(train), len(held))
    assert report.eval_output == str(out.with_name("eval.jsonl"))
    return train, held


def test_train_and_eval_partition_the_records(impl, store, tmp_path):
    everything = read_lines_of(store, tmp_path / "all.jsonl")
    train, held = split(store, tmp_path / "o" / "train.jsonl", 0.2)
    assert canonical(train + held) == canonical(everything)
    assert 0.1 * len(everything) < len(held) < 0.3 * len(everything)
    # each record keeps its place in path order within its file
    assert [r for r in everything if r in held] == held


def read_lines_of(store: Path, out: Path) -> list[dict]:
    jenova_fast.prepare(store, out)
    return read_lines(out)


def test_no_insight_changes_side_as_the_store_grows(impl, tmp_path):
    store = tmp_path / "store"
    write_store(store, 200, seed=11)
    _, held_before = split(store, tmp_path / "a" / "train.jsonl", 0.25)
    grown = tmp_path / "grown"
    shutil.copytree(store, grown)
    write_store(grown / "later", 200, seed=12)  # new insights in new folders
    train_after, held_after = split(grown, tmp_path / "b" / "train.jsonl", 0.25)
    kept = {json.dumps(r) for r in held_before}
    assert kept <= {json.dumps(r) for r in held_after}
    assert not kept & {json.dumps(r) for r in train_after}
    # a larger fraction only moves records from train to eval
    _, held_more = split(store, tmp_path / "c" / "train.jsonl", 0.5)
    assert kept <= {json.dumps(r) for r in held_more}


def test_identity_is_the_cortex_id_else_the_path_in_the_store(impl, tmp_path):
    def one(folder: Path, name: str, doc: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(doc))

    ids = [f"{i:08x}-0000-4000-a000-000000000000" for i in range(60)]
    first, second = tmp_path / "first", tmp_path / "second"
    for i, cortex_id in enumerate(ids):
        # the same insight (cortex_id) under another folder and file name: the same side
        one(first / "a", f"insight_{i}.json", {"content": f"c{i}", "cortex_id": cortex_id})
        one(second / "moved" / "b", f"renamed_{i}.json", {"content": f"c{i}", "cortex_id": cortex_id})
        # no cortex_id: the path relative to the store decides, wherever the store lives
        one(first / "plain", f"p{i}.json", {"content": f"p{i}"})
        one(second / "plain", f"p{i}.json", {"content": f"p{i}"})
    sides = []
    for root in (first, second):
        _, held = split(root, tmp_path / root.name / "train.jsonl", 0.3)
        sides.append(sorted(r["messages"][1]["content"] for r in held))
    assert sides[0] == sides[1] and sides[0]


def test_native_and_pure_write_the_same_bytes(store, tmp_path):
    outputs = []
    for module in (_pipeline, _pipeline_py):
        train, held = [], []
        records, stats = module.run(
            [str(store)],
            max_bytes=1 << 20,
            follow_symlinks=False,
            threads=3,
            write=train.append,
            on_skip=lambda skip: None,
            progress=lambda *a: None,
            eval_fraction=0.1,
            write_eval=held.append,
        )
        outputs.append((b"".join(train), b"".join(held), records, stats.eval_records))
    assert outputs[0] == outputs[1] and outputs[0][1]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.floats(0, 1))
def test_hash_kernels_agree(identity, fraction):
    assert _pipeline.held_out(identity, fraction) == _pipeline_py.held_out(identity, fraction)


def test_cli_option_and_its_errors(impl, store, tmp_path):
    out = tmp_path / "train.jsonl"
    result = run_cli("prepare", "--insights-dir", store, "--output", out, "--eval-fraction", "0.1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "eval.jsonl").stat().st_size > 0
    bad = run_cli("prepare", "--insights-dir", store, "--output", out, "--eval-fraction", "1.5")
    assert bad.returncode == 2 and "below 1" in bad.stderr
    clash = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "eval.jsonl", "--eval-fraction", "0.1")
    assert clash.returncode == 2 and "choose another --output" in clash.stderr
