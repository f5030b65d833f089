"""Fine-tuning and model replacement never touch the CPA state."""

from __future__ import annotations

import os
from pathlib import Path

from jenova_fast.cpa import CPA, default_state_dir


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_model_replacement_and_prepare_leave_the_state_alone(compiled_state, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from jenova_fast.demo import write_store
    from jenova_fast.prepare import prepare

    state_dir = default_state_dir("ann")
    cpa = CPA(state_dir)
    cpa.observe_queries(["what did we say about tomatoes"])
    cpa.observe_topics(["gardening"])
    before = _snapshot(state_dir)
    assert "state.npz" in before

    store = tmp_path / ".jenova-ai" / "users" / "ann" / "insights"
    write_store(store, 30, seed=1)
    models = tmp_path / "models"
    models.mkdir()
    (models / "jenova.gguf").write_bytes(b"GGUF old model")
    replacement = models / "jenova.gguf.new"
    replacement.write_bytes(b"GGUF fine-tuned model")
    os.replace(replacement, models / "jenova.gguf")  # how an install swaps the model in
    report = prepare(store, tmp_path / "finetune" / "train.jsonl")
    assert report.records > 0 and (tmp_path / "finetune" / "train.jsonl").is_file()

    assert _snapshot(state_dir) == before
    assert not state_dir.is_relative_to(models) and not state_dir.is_relative_to(tmp_path / "finetune")
    assert CPA(state_dir).stats()["queries"]["queries"] == 1
