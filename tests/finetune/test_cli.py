"""The command line end to end: `jenova-fast demo` output -> finetune (seed flag names) -> installed model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from jenova_fast.finetune import write_tiny_model
from jenova_fast.finetune.cli import main
from tests.conftest import run_cli


def test_demo_store_to_installed_model(tmp_path):
    """What a user runs on a fresh machine: demo store -> prepare -> finetune --install, then load it."""
    demo = run_cli("demo", "--insights", "30", "--dir", "store", "--output", "finetune/train.jsonl", "-q",
                   cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    write_tiny_model(tmp_path / "models" / "tiny-base.gguf")
    (tmp_path / "models" / "jenova.gguf").write_bytes((tmp_path / "models" / "tiny-base.gguf").read_bytes())
    done = run_cli("finetune", "--model-base", "models/tiny-base.gguf", "--train-data", "finetune/train.jsonl",
                   "--model-out", "finetune/jenova.gguf", "--install", "--ctx", "256", "--lr", "2e-3",
                   "--epochs", "1", "--eval-fraction", "0.1", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("finetune: said back ") and "installed models/jenova.gguf" in summary
    assert "held-out answer loss" in summary and "previous kept as models/jenova.prev.gguf" in summary
    assert "train 1/1" in done.stderr and "held-out answer loss before" in done.stderr
    assert "plan: ctx 256: given with --ctx; epochs 1: given with --epochs; lr 0.002: given with --lr" in done.stderr
    assert "example: " in done.stderr and "  after:  " in done.stderr
    report = json.loads((tmp_path / "finetune" / "jenova.report.json").read_text(encoding="utf-8"))
    assert report["heldout_loss_after"] < report["heldout_loss_before"]
    assert (tmp_path / "models" / "jenova.gguf").read_bytes() == (tmp_path / "finetune" / "jenova.gguf").read_bytes()
    loaded = subprocess.run(
        [sys.executable, "-c",
         "from llama_cpp import Llama; m = Llama('models/jenova.gguf', n_ctx=256, verbose=False); "
         "r = m.create_chat_completion([{'role': 'user', 'content': 'Hey Jenova'}], max_tokens=8); "
         "print(r['usage']['completion_tokens'])"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert loaded.returncode == 0 and int(loaded.stdout) > 0, loaded.stderr


def test_errors_exit_1_with_the_fix(tmp_path, capsys):
    assert main(["--base", str(tmp_path / "missing.gguf"), "--data", str(tmp_path / "t.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("finetune: error: ") and "missing.gguf: cannot read the model" in err


@pytest.mark.parametrize("args", [["finetune", "--base", "b.gguf"], ["install-model", "b.gguf"],
                                  ["install-model", "--rollback"]])
def test_without_the_extra_the_error_names_the_install_command(tmp_path, args):
    """The core package imports and runs without llama-cpp-python and gguf; asking to fine-tune says how."""
    code = ("import sys; sys.modules['llama_cpp'] = sys.modules['gguf'] = None; "
            f"from jenova_fast.cli import main; sys.exit(main({args!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 1, done.stderr
    assert "pip install 'jenova-fast[finetune]'" in done.stderr and "Traceback" not in done.stderr


def test_help_lists_the_seed_flag_names():
    done = run_cli("finetune", "--help")
    assert done.returncode == 0
    for flag in ("--model-base", "--train-data", "--model-out", "--trainer", "--llama-finetune", "--install",
                 "--system"):
        assert flag in done.stdout
    assert "working copies" in done.stdout and str(Path("jenova-fast") / "work") in done.stdout


def test_the_documented_tiny_model_command_writes_a_model_without_warnings(tmp_path):
    """`python -m jenova_fast.finetune.tiny_model PATH`, as README and models/README.md give it."""
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "jenova_fast.finetune.tiny_model", "m/tiny.gguf"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert (tmp_path / "m" / "tiny.gguf").read_bytes()[:4] == b"GGUF"
