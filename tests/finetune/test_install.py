"""Install and rollback of models/jenova.gguf: atomic, previous kept, invalid models never installed."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from jenova_fast.finetune import FinetuneError, install_model, rollback, write_tiny_model
from jenova_fast.finetune.cli import install_model_main


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[Path, Path]:
    return (write_tiny_model(tmp_path / "a.gguf", seed=1), write_tiny_model(tmp_path / "b.gguf", seed=2))


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_install_keeps_previous_and_rollback_swaps(tmp_path, two_models):
    a, b = two_models
    models = tmp_path / "models"
    target = models / "jenova.gguf"
    first = install_model(a, target)
    assert first.previous is None and target.read_bytes() == a.read_bytes()
    second = install_model(b, target)
    assert second.previous == models / "jenova.prev.gguf"
    assert target.read_bytes() == b.read_bytes() and second.previous.read_bytes() == a.read_bytes()
    assert _listing(models) == ["jenova.gguf", "jenova.prev.gguf"]  # no temp files left behind

    rollback(target)
    assert target.read_bytes() == a.read_bytes() and (models / "jenova.prev.gguf").read_bytes() == b.read_bytes()
    rollback(target)  # a second rollback undoes the first
    assert target.read_bytes() == b.read_bytes()
    assert _listing(models) == ["jenova.gguf", "jenova.prev.gguf"]


def test_a_model_failing_validation_is_never_installed(tmp_path, two_models):
    a, _ = two_models
    target = tmp_path / "models" / "jenova.gguf"
    install_model(a, target)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(a.read_bytes()[: len(a.read_bytes()) // 2])  # header fine, tensors cut off
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    for bad, match in ((broken, "damaged or truncated|could not load"), (text, "not a GGUF file")):
        with pytest.raises(FinetuneError, match=match):
            install_model(bad, target)
        assert target.read_bytes() == a.read_bytes()
        assert _listing(target.parent) == ["jenova.gguf"]


def test_rollback_without_previous_and_invalid_previous(tmp_path, two_models):
    a, _ = two_models
    target = tmp_path / "models" / "jenova.gguf"
    install_model(a, target)
    with pytest.raises(FinetuneError, match="no previous model to roll back to"):
        rollback(target)
    (target.parent / "jenova.prev.gguf").write_text("garbage")
    with pytest.raises(FinetuneError, match="not a GGUF file"):
        rollback(target)
    assert target.read_bytes() == a.read_bytes()


def test_install_touches_nothing_else(tmp_path, two_models):
    a, b = two_models
    cpa_state = tmp_path / ".cpa_state"
    cpa_state.mkdir()
    (cpa_state / "counts.json").write_text('{"observed": 3}')
    data = tmp_path / "finetune" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("{}\n")
    before = {p: p.read_bytes() for p in (cpa_state / "counts.json", data)}
    install_model(a, tmp_path / "models" / "jenova.gguf")
    install_model(b, tmp_path / "models" / "jenova.gguf")
    rollback(tmp_path / "models" / "jenova.gguf")
    assert {p: p.read_bytes() for p in before} == before
    assert _listing(tmp_path) == [".cpa_state", "a.gguf", "b.gguf", "finetune", "models"]


def test_install_model_cli(tmp_path, two_models, capsys):
    a, b = two_models
    models = tmp_path / "models"
    assert install_model_main([str(a), "--models-dir", str(models)]) == 0
    assert install_model_main([str(b), "--models-dir", str(models)]) == 0
    assert "previous kept as" in capsys.readouterr().out
    assert install_model_main(["--rollback", "--models-dir", str(models)]) == 0
    assert (models / "jenova.gguf").read_bytes() == a.read_bytes()
    assert "rolled back" in capsys.readouterr().out
    (tmp_path / "c.txt").write_text("nope")
    assert install_model_main([str(tmp_path / "c.txt"), "--models-dir", str(models)]) == 1
    assert "not a GGUF file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        install_model_main([])


def test_a_second_install_at_the_same_time_is_told_and_changes_nothing(tmp_path, two_models):
    import fcntl
    import os

    first, second = two_models
    models = tmp_path / "models"
    install_model(first, models / "jenova.gguf")
    install_model(second, models / "jenova.gguf")  # so a rollback has a previous model
    before = sorted((p.name, p.read_bytes()) for p in models.iterdir())
    held = os.open(models, os.O_RDONLY | os.O_DIRECTORY)  # what a running install holds
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(FinetuneError, match=r"another install or rollback in .* is running; nothing was changed"):
            install_model(first, models / "jenova.gguf")
        with pytest.raises(FinetuneError, match="another install or rollback"):
            rollback(models / "jenova.gguf")
    finally:
        os.close(held)
    assert sorted((p.name, p.read_bytes()) for p in models.iterdir()) == before
    assert rollback(models / "jenova.gguf").previous is not None  # free again
