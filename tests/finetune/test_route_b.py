"""Route B: the user's own llama.cpp `llama-finetune`, found via $JENOVA_LLAMA_FINETUNE or PATH.

The program is not part of llama-cpp-python; build it with docs/finetune.md (about 7 minutes on 2 cores)
and point JENOVA_LLAMA_FINETUNE at it to run these tests.
"""

from __future__ import annotations

import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from jenova_fast.finetune import FinetuneConfig, FinetuneError, finetune
from jenova_fast.finetune.metadata import open_reader, read_kv
from jenova_fast.finetune.tiny_model import TINY_CHAT_TEMPLATE
from jenova_fast.finetune.train_program import PROGRESS_LINE, find_program, program_windows, train_program
from tests.finetune.conftest import TRAIN_SETTINGS, chat_records, write_jsonl

PROGRAM = find_program()
needs_program = pytest.mark.skipif(
    PROGRAM is None, reason="no llama-finetune: set JENOVA_LLAMA_FINETUNE=/path/to/llama-finetune or put it on PATH")


def test_progress_line_parsing():
    line = "train: [▉▉▉     ] data=0000039/0000117 loss=4.02305±0.12394 acc=14.67±0.35% t=00:00:01 ETA=00:00:02"
    match = PROGRESS_LINE.match(line)
    assert match and (match["phase"], match["i"], match["n"]) == ("train", "0000039", "0000117")
    assert (float(match["loss"]), float(match["acc"])) == (4.02305, 14.67)
    assert PROGRESS_LINE.match("val:   [        ] data=0000001/0000002 loss=nan±nan acc=0.00±0.00%")


def test_program_window_arithmetic_matches_llama_finetune():
    assert program_windows(384, 256, 0.0) == 0  # (384 - 257) // 128: exits 0 having trained nothing
    assert program_windows(385, 256, 0.0) == 1
    assert program_windows(10_000, 256, 0.05) == int(76 * 0.95)


@needs_program
def test_route_b_trains_and_is_scored_on_heldout_records(tmp_path, tiny_base, chat_jsonl):
    progress = []
    report = finetune(FinetuneConfig(base=tiny_base, data=chat_jsonl, out=tmp_path / "models" / "jenova.gguf",
                                     report=tmp_path / "r.json", trainer="llama-finetune", llama_finetune=PROGRAM,
                                     **TRAIN_SETTINGS), progress=progress.append)
    assert report.trainer == "llama-finetune" and report.steps > 0
    assert report.heldout_loss_after < report.heldout_loss_before - 1.0, report
    assert [p.epoch for p in progress][-1] == TRAIN_SETTINGS["epochs"] and len(report.per_epoch) == 2
    kv = read_kv(open_reader(report.out))
    assert kv["tokenizer.chat_template"] == TINY_CHAT_TEMPLATE and kv["llama.context_length"] == 2048
    assert any("special tokens" in note for note in report.notes)


@needs_program
def test_route_b_too_few_tokens_caught_before_launch(tmp_path, tiny_base):
    data = write_jsonl(tmp_path / "t.jsonl", chat_records(6, seed=4))  # ~300 tokens a side: 0 program windows
    with pytest.raises(FinetuneError, match="make no training window for llama-finetune"):
        finetune(FinetuneConfig(base=tiny_base, data=data, out=tmp_path / "o.gguf", report=tmp_path / "r.json",
                                trainer="llama-finetune", llama_finetune=PROGRAM, n_ctx=256, eval_fraction=0.5))


@needs_program
def test_route_b_failed_run_is_an_error_not_a_silent_exit(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    text = tmp_path / "t.txt"
    text.write_text("hello " * 400)
    with pytest.raises(FinetuneError, match=r"exited with 1: (it gave no reason|see its output)"):
        train_program(PROGRAM, broken, tmp_path / "o.gguf", text, 2400, n_ctx=256, epochs=1, lr=1e-3, threads=1)
    assert not (tmp_path / "o.gguf").exists()
