"""Real training of tiny llama models: loss falls, metadata is back, the result loads and generates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from jenova_fast._fs import available_cores
from jenova_fast.finetune import FinetuneConfig, finetune
from jenova_fast.finetune.metadata import open_reader, read_kv
from jenova_fast.finetune.runtime import pick_threads
from jenova_fast.finetune.tiny_model import TINY_CHAT_TEMPLATE
from tests.finetune.conftest import N_RECORDS, TRAIN_SETTINGS


def test_heldout_loss_falls(trained):
    report, _ = trained
    assert report.steps > 0
    assert report.heldout_loss_after < report.heldout_loss_before - 1.0, report
    assert report.heldout_accuracy_after > report.heldout_accuracy_before
    # the untrained model is near uniform over its 260 tokens: ln(260) = 5.56
    assert 4.5 < report.heldout_loss_before < 7.0


def test_trainer_and_independent_scoring_agree(trained):
    """ggml-opt's own held-out loss after the last epoch equals plain-inference scoring of the saved file."""
    report, _ = trained
    assert report.per_epoch[-1]["eval_loss"] == pytest.approx(report.heldout_loss_after, rel=1e-3)


def test_progress_reports_every_step(trained):
    report, progress = trained
    train_steps = [p for p in progress if p.phase == "train"]
    assert len(train_steps) == report.steps
    assert {p.epoch for p in train_steps} == {1, 2}
    assert all(0.0 <= p.accuracy <= 1.0 and p.eta >= 0 for p in progress)
    assert progress[-1].phase == "eval" and progress[-1].eta == pytest.approx(0.0, abs=1e-9)
    assert any(p.phase == "eval" for p in progress)


def test_template_and_context_length_restored(trained, tiny_base):
    report, _ = trained
    kv = read_kv(open_reader(report.out))
    assert kv["tokenizer.chat_template"] == TINY_CHAT_TEMPLATE
    assert kv["llama.context_length"] == read_kv(open_reader(tiny_base))["llama.context_length"] == 2048
    assert "tokenizer.chat_template" in report.restored_metadata


def test_result_loads_in_llama_cpp_python_and_generates(trained):
    from llama_cpp import Llama

    report, _ = trained
    llm = Llama(model_path=report.out, n_ctx=256, n_threads=1, verbose=False)
    try:
        reply = llm.create_chat_completion(
            messages=[{"role": "user", "content": "What have you learned about sleep?"}],
            max_tokens=16, temperature=0.0, seed=0)
    finally:
        llm.close()
    assert reply["usage"]["completion_tokens"] > 0
    assert isinstance(report.smoke_reply, str) and report.smoke_prompt


def test_report_json_written(trained):
    report, _ = trained
    saved = json.loads(Path(report.report).read_text(encoding="utf-8"))
    assert saved["heldout_loss_before"] == report.heldout_loss_before
    assert saved["heldout_loss_after"] == report.heldout_loss_after
    assert saved["steps"] == report.steps and saved["seconds_per_step"] > 0
    assert saved["records"]["heldout"] + saved["records"]["train"] == N_RECORDS
    assert saved["out"] == report.out


def test_output_in_models_dir_is_the_installed_model(trained):
    report, _ = trained
    assert report.installed == report.out and report.previous is None
    leftovers = [p.name for p in Path(report.out).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("base_fixture", ["q8_base", "q4k_base"])
def test_quantized_base_trains_all_in_an_f32_working_copy(request, base_fixture, small_chat_jsonl, tmp_path):
    base = request.getfixturevalue(base_fixture)
    out = tmp_path / "models" / "jenova.gguf"
    report = finetune(FinetuneConfig(base=base, data=small_chat_jsonl, out=out, report=tmp_path / "r.json",
                                     train="all", **{**TRAIN_SETTINGS, "epochs": 1}))
    work = Path(report.working_copy)
    assert work.name.startswith(f"{base.stem}.work-") and work.is_file()
    types = {t.name: t.tensor_type.name for t in open_reader(work).tensors}
    assert {types.pop("token_embd.weight")} != {"F32"} == set(types.values())  # llama.cpp never trains token_embd
    assert report.heldout_loss_after < report.heldout_loss_before - 1.0, report
    assert read_kv(open_reader(out))["tokenizer.chat_template"] == TINY_CHAT_TEMPLATE
    # the working copy is reused, not redone, while it is newer than the base
    mtime = os.stat(work).st_mtime_ns
    again = finetune(FinetuneConfig(base=base, data=small_chat_jsonl, out=out, report=tmp_path / "r.json",
                                    train="all", **{**TRAIN_SETTINGS, "epochs": 1}))
    assert again.working_copy == str(work) and os.stat(work).st_mtime_ns == mtime


def test_threads_default_to_available_cores_and_never_oversubscribe(caplog):
    cores = len(os.sched_getaffinity(0))
    assert available_cores() == cores
    assert pick_threads(None) == cores
    assert pick_threads(1) == 1
    with caplog.at_level("WARNING"):
        assert pick_threads(cores + 7) == cores
    assert "oversubscribing" in caplog.text
