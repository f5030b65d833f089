"""LoRA adapters trained on the patched engine: llama.cpp and llama-cpp-python load them over the base, they
change its logits, a merged model gives the same logits, step 0 is the base, and the base is never written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.finetune.conftest import chat_records, write_jsonl

pytest.importorskip("llama_cpp", reason="the finetune extra is not installed")

PROMPT = "What have you learned about coffee?"


def _logits(model: Path, adapter: Path | None = None) -> np.ndarray:
    """The last position's logits of PROMPT, by llama-cpp-python as a user's runtime would load the files."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), lora_path=None if adapter is None else str(adapter), n_ctx=256,
                n_threads=1, logits_all=True, verbose=False)
    try:
        llm.eval(llm.tokenize(PROMPT.encode()))
        return np.array(llm.eval_logits[-1], dtype=np.float64)
    finally:
        llm.close()


@pytest.fixture(scope="module")
def trained_lora(patched, tmp_path_factory: pytest.TempPathFactory):
    from jenova_fast.finetune import FinetuneConfig, finetune
    from jenova_fast.finetune.adapter import sha256
    from jenova_fast.finetune.tiny_model import write_tiny_model

    root = tmp_path_factory.mktemp("lora")
    base = write_tiny_model(root / "base.gguf")
    digest = sha256(base)
    data = write_jsonl(root / "train.jsonl", chat_records(120))
    report = finetune(FinetuneConfig(base=base, data=data, out=root / "models" / "jenova.gguf", n_ctx=256, lr=2e-3,
                                     epochs=2, eval_fraction=0.05, adapter="lora:8", merge=root / "merged.gguf",
                                     report=root / "r.json"))
    return base, digest, report, root


def test_the_adapter_is_a_small_gguf_llama_cpp_loads_and_it_changes_the_logits(trained_lora):
    base, _, report, root = trained_lora
    adapter = root / "models" / "jenova-lora.gguf"
    assert report.out == str(adapter) and adapter.stat().st_size < base.stat().st_size / 4
    assert report.heldout_loss_after < report.heldout_loss_before - 0.5, report
    plain, adapted = _logits(base), _logits(base, adapter)
    assert np.abs(adapted - plain).max() > 1e-2
    # what was learned is asked of the adapter over the base, as of a full model
    assert report.recall_asked == min(50, report.records["train"]) and report.example["after"], report.example
    assert report.example["after"] != report.example["before"]


def test_the_merged_model_gives_the_adapters_logits(trained_lora):
    base, _, _, root = trained_lora
    adapted = _logits(base, root / "models" / "jenova-lora.gguf")
    merged = _logits(root / "merged.gguf")
    assert np.abs(merged - adapted).max() <= 1e-3 * max(1.0, float(np.abs(adapted).max()))


def test_step_zero_is_the_base_and_the_base_is_never_written(trained_lora, tmp_path):
    from jenova_fast.finetune import adapter
    from jenova_fast.finetune.metadata import open_reader

    base, digest, report, _ = trained_lora
    assert adapter.sha256(base) == digest
    reader = open_reader(base)
    names = [t.name for t in reader.tensors if t.name.startswith("blk.") and len(t.shape) == 2]
    spec = adapter.LoraSpec(4, 8.0)
    initial = adapter.initial_tensors(adapter.targets(reader, names), spec.rank, seed=0)
    assert all(not t.any() for name, t in initial.items() if name.endswith(".lora_b"))
    start = adapter.write_adapter(tmp_path / "init.gguf", base, spec, initial)
    assert np.array_equal(_logits(base, start), _logits(base))
    kv = adapter.read_adapter(start)[2]
    assert (kv["general.type"], kv["adapter.type"], kv["adapter.lora.alpha"]) == ("adapter", "lora", 8.0)
    assert kv[adapter.BASE_SHA256_KEY] == digest
    assert set(report.trained_tensors) == {f"{n}{s}" for n in names for s in adapter.SUFFIXES}


def test_adapter_options_are_checked(patched, tmp_path):
    from jenova_fast.finetune.adapter import parse_adapter
    from jenova_fast.finetune.errors import FinetuneError

    assert parse_adapter("lora") == parse_adapter("lora:16", 16.0)
    assert parse_adapter("lora:4", 8).scale == 2.0
    for bad in ("lora:0", "lora:x", "qlora"):
        with pytest.raises(FinetuneError, match="--adapter"):
            parse_adapter(bad)


def test_install_model_checks_an_adapters_base_and_rolls_back(trained_lora, tmp_path):
    from jenova_fast.finetune.tiny_model import write_tiny_model
    from tests.conftest import run_cli

    _, _, _, root = trained_lora
    adapter = root / "models" / "jenova-lora.gguf"
    models = tmp_path / "models"
    other = write_tiny_model(tmp_path / "other.gguf", seed=7)  # same shape, other weights
    refused = run_cli("install-model", adapter, "--base", other, "--models-dir", models)
    assert refused.returncode == 1 and str(other) in refused.stderr and "SHA-256" in refused.stderr
    assert not models.exists() or not any(models.iterdir())
    for _ in range(2):
        done = run_cli("install-model", adapter, "--models-dir", models)  # the base it records
        assert done.returncode == 0, done.stderr
        assert "installed the adapter" in done.stdout
    assert (models / "jenova-lora.gguf").is_file() and (models / "jenova-lora.prev.gguf").is_file()
    back = run_cli("install-model", "--rollback", "--adapter", "--models-dir", models)
    assert back.returncode == 0, back.stderr
    assert not (models / "jenova.gguf").exists()  # the full model's place is not touched


def test_the_fleet_gives_each_user_an_adapter_over_the_shared_base(patched, tmp_path):
    """The chain by hand (what each Dask worker runs): a few MB per user instead of a model per user."""
    from jenova_fast.finetune import adapter
    from jenova_fast.finetune.tiny_model import write_tiny_model
    from jenova_fast.fleet import FleetOptions
    from jenova_fast.fleet.chain import run_chain
    from jenova_fast.fleet.demo import write_fleet
    from jenova_fast.fleet.plan import UserPaths, base_identity, fingerprint, is_fresh

    base = write_tiny_model(tmp_path / "base.gguf")
    (user,) = write_fleet(tmp_path, 1, 24, model=False)
    options = FleetOptions(base=base, n_ctx=256, lr=2e-3, epochs=2, eval_fraction=0.1, adapter="lora:4")
    paths = UserPaths(tmp_path, user, adapter=True)
    identity = base_identity(base)
    _, _, trained, installed = run_chain(paths, options, identity)
    assert installed.model == str(tmp_path / "users" / user / "models" / "jenova-lora.gguf")
    kv = adapter.read_adapter(installed.model)[2]
    assert kv[adapter.BASE_SHA256_KEY] == adapter.sha256(base)
    assert not (tmp_path / "users" / user / "models" / "jenova.gguf").exists()
    assert is_fresh(paths, fingerprint(paths, identity, options))  # a rerun skips the user
    assert trained.heldout_loss_after < trained.heldout_loss_before


def test_an_adapter_that_diverges_says_to_lower_the_rate_and_installs_nothing(patched, tmp_path):
    from jenova_fast.finetune import FinetuneConfig, FinetuneError, finetune
    from jenova_fast.finetune.tiny_model import write_tiny_model

    base = write_tiny_model(tmp_path / "base.gguf")
    data = write_jsonl(tmp_path / "train.jsonl", chat_records(40))
    out = tmp_path / "models" / "jenova.gguf"
    with pytest.raises(FinetuneError, match="lower --lr"):
        finetune(FinetuneConfig(base=base, data=data, out=out, n_ctx=256, lr=50.0, epochs=1, eval_fraction=0.2,
                                adapter="lora:4", recall_sample=0))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_an_adapter_that_cannot_fit_is_refused_with_the_numbers(trained_lora, tmp_path):
    from jenova_fast.finetune import FinetuneConfig, FinetuneError, finetune

    base, _, report, root = trained_lora
    need = report.memory_estimate
    assert need["total"] == need["weights"] + need["optimizer"] + need["activations"] > base.stat().st_size
    out = tmp_path / "models" / "jenova.gguf"
    for checkpoints, fix in ((False, "add --gradient-checkpointing"), (True, "lower the rank")):
        with pytest.raises(FinetuneError, match=rf"--adapter lora:8 over attn,ffn at --ctx 256 needs about .* GiB = "
                                                rf"weights .* 0.05 GiB is available; {fix}, lower --ctx"):
            finetune(FinetuneConfig(base=base, data=root / "train.jsonl", out=out, n_ctx=256, adapter="lora:8",
                                    gradient_checkpointing=checkpoints, memory_available=50 * 2**20))
    assert not out.parent.exists()
