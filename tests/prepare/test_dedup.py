"""--dedup exact|near: planted duplicates are found, the newest of each group is kept, nothing else is
touched, the report names every group, and native (Numba) and pure agree exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jenova_fast
from jenova_fast.demo import plant_duplicates, write_store
from jenova_fast.prepare import minhash, minhash_py
from jenova_fast.prepare.dedup import choose_bands, find_duplicates, normalize
from tests.conftest import run_cli
from tests.prepare.reference import read_lines


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str, str]]]:
    root = tmp_path_factory.mktemp("dedup") / "store"
    write_store(root, 300, seed=5)
    return root, plant_duplicates(root, 50, seed=6)


def grouped(report) -> set[frozenset[str]]:
    return {frozenset([g["kept"], *g["dropped"]]) for g in report.dedup["members"]}


def test_exact_finds_the_exact_copies_and_keeps_the_newest(impl, planted_store, tmp_path):
    root, planted = planted_store
    report = jenova_fast.prepare(root, tmp_path / "o.jsonl", dedup="exact")
    exact = {frozenset([str(root / a), str(root / b)]) for a, b, kind in planted if kind in ("exact", "spacing")}
    assert grouped(report) == exact
    for group in report.dedup["members"]:
        assert group["kept"].endswith("_dup.json")  # one second newer
    assert report.duplicates_dropped == len(exact) == report.dedup["dropped"]
    assert report.insight_records == 300 - sum(len(v) for v in _corrupt(root)) + len(planted) - len(exact)


def _corrupt(root: Path) -> list[list[str]]:
    return list(json.loads((root / ".jenova-demo.json").read_text())["corrupt"].values())


def test_near_finds_every_pair_at_or_above_the_threshold_and_nothing_else(impl, planted_store, tmp_path):
    root, planted = planted_store
    threshold = 0.6
    report = jenova_fast.prepare(root, tmp_path / "o.jsonl", dedup="near", near_threshold=threshold)
    truth = set()
    for a, b, _ in planted:
        sa, sb = (shingle_set(root / p) for p in (a, b))
        if len(sa & sb) >= threshold * len(sa | sb):
            truth.add(frozenset([str(root / a), str(root / b)]))
    assert grouped(report) == truth
    assert len(truth) > 30  # most kinds of change stay above 0.6 on these texts
    records = read_lines(tmp_path / "o.jsonl")
    assert len(records) == report.insight_records
    dropped = {p for g in report.dedup["members"] for p in g["dropped"]}
    assert all(not p.endswith("_dup.json") for p in dropped)


def shingle_set(path: Path) -> set[int]:
    text = normalize(json.loads(path.read_bytes())["content"])
    return set(minhash_py.shingles(text.encode()))


def test_a_store_without_duplicates_loses_nothing(impl, demo_store, tmp_path):
    root, manifest = demo_store
    for mode in ("exact", "near"):
        report = jenova_fast.prepare(root, tmp_path / f"{mode}.jsonl", dedup=mode)
        assert report.dedup["members"] == [] and report.insight_records == manifest.records


def test_native_and_pure_give_the_same_groups_and_bytes(planted_store, tmp_path, monkeypatch):
    root, _ = planted_store
    results = []
    for pure in ("1", "0"):
        monkeypatch.setenv("JENOVA_FAST_PURE", pure)
        out = tmp_path / f"{pure}.jsonl"
        report = jenova_fast.prepare(root, out, dedup="near", near_threshold=0.7, eval_fraction=0.2)
        results.append((report.dedup, out.read_bytes(), out.with_name("eval.jsonl").read_bytes()))
        out.with_name("eval.jsonl").unlink()
    assert results[0] == results[1]


texts = st.lists(st.sampled_from(["alpha", "beta", "gamma", "δέλτα", "ß", "x", ""]), max_size=40).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(texts, min_size=1, max_size=8))
def test_signature_and_band_kernels_agree(docs):
    encoded = [normalize(t).encode() for t in docs]
    starts = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in encoded], out=starts[1:])
    a, b = minhash_py.permutations(32)
    native = minhash.signatures(b"".join(encoded), starts, a, b)
    pure = minhash_py.signatures(b"".join(encoded), starts, a, b)
    assert np.array_equal(native, pure)
    assert np.array_equal(minhash.band_keys(native, 8, 4), minhash_py.band_keys(pure, 8, 4))


def test_kernels_as_python_under_numba_disable_jit():
    code = (
        "import numpy as np\nfrom jenova_fast.prepare import minhash, minhash_py\n"
        "a, b = minhash_py.permutations(16)\ndata = b'one two three four five six seven'\n"
        "starts = np.array([0, 13, len(data)])\n"
        "s = minhash.signatures(data, starts, a, b)\n"
        "assert np.array_equal(s, minhash_py.signatures(data, starts, a, b))\n"
        "assert np.array_equal(minhash.band_keys(s, 4, 4), minhash_py.band_keys(s, 4, 4))\n"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONWARNINGS": "ignore::RuntimeWarning"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_normalization_and_the_newest_rule():
    assert normalize("Ｃafé\u00a0 IS\tfine\n") == normalize("café is fine") == "café is fine"
    insights = [("a", "2025-01-02", "Same  thing"), ("b", "2025-01-03", "same thing"), ("c", "", "SAME THING")]
    result = find_duplicates(insights, "exact")
    assert result.groups == [{"kept": "b", "dropped": ["a", "c"]}]


def test_bands_catch_a_pair_at_the_threshold():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = choose_bands(threshold, 128)
        assert 1 - (1 - threshold**rows) ** bands >= 0.99 and bands * rows <= 128


def test_cli_report_names_the_groups(impl, planted_store, tmp_path):
    root, _ = planted_store
    report_file = tmp_path / "r.json"
    result = run_cli("prepare", "--insights-dir", root, "--output", tmp_path / "o.jsonl", "--dedup", "exact",
                     "--report", report_file)
    assert result.returncode == 0, result.stderr
    assert "duplicates dropped" in result.stdout
    data = json.loads(report_file.read_text())
    assert data["dedup"]["mode"] == "exact" and data["duplicates_dropped"] == data["dedup"]["dropped"] > 0
    bad = run_cli("prepare", "--insights-dir", root, "--dedup", "near", "--near-threshold", "0")
    assert bad.returncode == 2 and "above 0" in bad.stderr
