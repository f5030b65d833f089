"""The patched engine training real tiny models: the same gradients as stock, a mask that masks, phi-2 whole,
and the stock engine still there without any build."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from jenova_fast.finetune.windows import Windows
from tests.finetune.conftest import chat_records, write_jsonl

pytest.importorskip("llama_cpp", reason="the finetune extra is not installed")

N_CTX = 256


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from jenova_fast.finetune.metadata import open_reader

    return {t.name: np.array(t.data, dtype=np.float32) for t in open_reader(path).tensors
            if t.tensor_type == 0}  # F32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jenova_fast.finetune.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("engine") / "tiny.gguf")


def _windows(n: int, seed: int = 0) -> Windows:
    rng = np.random.default_rng(seed)
    return Windows(rng.integers(3, 259, size=(n, N_CTX + 1)).astype(np.int32))


def _step(base: Path, out: Path, windows: Windows, heldout: Windows, engine: str, **kw: object):
    from jenova_fast.finetune.train_inprocess import train_inprocess

    return train_inprocess(base, out, lambda _epoch: windows, heldout, epochs=1, engine_kind=engine,
                           **{"lr": 1e-3, "threads": 1, **kw})  # type: ignore[arg-type]


def test_gemm_backward_gives_the_stock_gradients(patched, tiny, tmp_path):
    """One SGD step from the same weights on each engine: w' - w = -lr * grad, tensor by tensor; the patched one
    with its products on OpenBLAS (patch 0005, split over 2 threads) and on ggml's own kernels."""
    from jenova_fast.engine import library

    blas = library.find_blas()
    before = _tensors(tiny)
    deltas = {}
    runs = [("stock", None), ("patched", None)] + ([("patched", blas)] if blas else [])
    try:
        for engine, using in runs:
            patched.use_blas(using)
            out = tmp_path / f"{engine}-{'blas' if using else 'ggml'}.gguf"
            _step(tiny, out, _windows(1), _windows(1, seed=1), engine, optimizer="sgd", lr=1e-2,
                  threads=2 if using else 1)
            after = _tensors(out)
            deltas[out.stem] = {name: after[name] - before[name] for name in before if name != "token_embd.weight"}
    finally:
        patched.use_blas(blas)
    stock = deltas.pop("stock-ggml")
    moved = [name for name, d in stock.items() if np.abs(d).max() > 0]
    assert len(moved) == len(stock) > 10  # every trained tensor got a gradient
    assert len(deltas) == len(runs) - 1
    for run, ours in deltas.items():
        for name, theirs in stock.items():
            scale = float(np.abs(theirs).max())
            assert np.abs(ours[name] - theirs).max() <= 1e-3 * scale + 1e-9, (run, name, scale)


def test_a_batch_with_every_token_masked_leaves_every_weight_unchanged(patched, tiny, tmp_path):
    windows = _windows(2)
    masked = Windows(windows.tokens, np.zeros_like(windows.tokens, dtype=bool))
    result = _step(tiny, tmp_path / "masked.gguf", masked, _windows(1, seed=1), "patched", lr=1e-2)
    assert result.steps == 2
    before, after = _tensors(tiny), _tensors(tmp_path / "masked.gguf")
    assert all(np.array_equal(before[name], after[name]) for name in before)
    # ... and one trained token is enough to move them: the mask is what held them
    one = np.zeros_like(windows.tokens, dtype=bool)
    one[:, 100] = True
    _step(tiny, tmp_path / "one.gguf", Windows(windows.tokens, one), _windows(1, seed=1), "patched", lr=1e-2)
    after = _tensors(tmp_path / "one.gguf")
    assert any(not np.array_equal(before[name], after[name]) for name in before)


def test_the_masked_loss_is_the_mean_over_the_trained_tokens(patched, tiny, tmp_path):
    """The training loop's held-out loss (llama.cpp's masked cross-entropy) equals plain inference scored on
    the same tokens in numpy; a fully masked training window keeps the weights those of the base."""
    from jenova_fast.finetune.evaluate import heldout_loss

    heldout = _windows(2, seed=3)
    rng = np.random.default_rng(4)
    heldout = Windows(heldout.tokens, rng.random(heldout.tokens.shape) < 0.3)
    train = _windows(1)
    result = _step(tiny, None, Windows(train.tokens, np.zeros_like(train.tokens, dtype=bool)), heldout,  # type: ignore[arg-type]
                   "patched")
    scored = heldout_loss(tiny, heldout, threads=1)
    assert scored.tokens == heldout.n_targets
    assert result.epochs[0]["eval_loss"] == pytest.approx(scored.loss, rel=2e-3)
    assert result.epochs[0]["eval_accuracy"] == pytest.approx(scored.accuracy, abs=1e-9)


def test_the_stock_engine_refuses_a_mask_it_cannot_apply(tiny, tmp_path):
    from jenova_fast.finetune.errors import FinetuneError

    windows = _windows(1)
    with pytest.raises(FinetuneError, match=r"stock llama.cpp engine cannot leave tokens out"):
        _step(tiny, None, Windows(windows.tokens, np.ones_like(windows.tokens, dtype=bool) & (
            np.arange(N_CTX + 1) > 10)), windows, "stock")  # type: ignore[arg-type]


def test_phi2_trains_whole_on_the_patched_engine(patched, tmp_path):
    """LayerNorm, GELU and the fused QKV (a transposed VIEW gradient) all in the backward pass."""
    from jenova_fast.finetune import FinetuneConfig, finetune
    from jenova_fast.finetune.probe import probe
    from jenova_fast.finetune.tiny_model import write_tiny_model

    base = write_tiny_model(tmp_path / "phi2.gguf", arch="phi2")
    data = write_jsonl(tmp_path / "t.jsonl", chat_records(40, seed=2))
    names = tuple(name for name in _tensors(base) if name != "token_embd.weight")
    probe(base, names, N_CTX, architecture="phi2", spec="all", engine="patched")  # no abort in a child
    out = tmp_path / "models" / "jenova.gguf"
    report = finetune(FinetuneConfig(base=base, data=data, out=out, report=tmp_path / "r.json", n_ctx=N_CTX,
                                     lr=2e-3, epochs=2, eval_fraction=0.1, train="all", engine="patched",
                                     loss="all"))
    assert report.engine == "patched" and report.train_spec == "all"
    assert report.heldout_loss_after < report.heldout_loss_before - 0.5, report
    before, after = _tensors(base), _tensors(out)
    unchanged = {name for name in names if name in after and np.array_equal(before[name], after[name])}
    assert not unchanged, unchanged  # every block's LayerNorm, QKV, GELU FFN and the head


def test_the_stock_engine_needs_no_build(tiny, tmp_path, monkeypatch):
    from jenova_fast.engine import EngineError, choose
    from jenova_fast.finetune import FinetuneConfig, finetune
    from jenova_fast.finetune.errors import FinetuneError

    monkeypatch.setenv("JENOVA_FAST_CACHE", str(tmp_path / "empty-cache"))
    choice = choose("auto")
    assert choice.kind == "stock" and "jenova-fast engine build" in choice.reason
    with pytest.raises(EngineError, match=r"not built.*jenova-fast engine build"):
        choose("patched")
    data = write_jsonl(tmp_path / "t.jsonl", chat_records(40, seed=2))
    config = FinetuneConfig(base=tiny, data=data, out=tmp_path / "models" / "jenova.gguf", n_ctx=N_CTX, lr=2e-3,
                            epochs=1, eval_fraction=0.1, report=tmp_path / "r.json")
    report = finetune(config)
    assert (report.engine, report.loss) == ("stock", "all")
    assert "not built" in report.engine_choice
    assert report.heldout_loss_after < report.heldout_loss_before
    config.loss = "answer"
    with pytest.raises(FinetuneError, match=r"--loss answer needs the patched engine"):
        finetune(config)


@pytest.mark.parametrize("lora", [False, True], ids=["all", "lora"])
def test_recomputed_activations_give_the_same_step(patched, tiny, tmp_path, lora, caplog):
    """Patch 0006: two AdamW steps with every activation kept and with only the block outputs kept (the rest
    computed again in the backward pass) move every weight the same way, bit for bit."""
    from jenova_fast.finetune import adapter

    results = {}
    said = {}
    for checkpoints in (False, True):
        caplog.clear()
        caplog.set_level(logging.DEBUG, logger="jenova_fast.finetune.llama_cpp")
        kw: dict[str, object] = {"checkpoints": checkpoints, "threads": 2}
        if lora:
            from jenova_fast.finetune.metadata import open_reader

            spec = adapter.parse_adapter("lora:4", None)
            reader = open_reader(tiny)
            matrices = adapter.targets(reader, [t.name for t in reader.tensors if t.name.endswith("attn_q.weight")
                                                or t.name.endswith("ffn_up.weight")])
            initial = adapter.initial_tensors(matrices, spec.rank, 0)
            kw["lora"] = adapter.write_adapter(tmp_path / f"init-{checkpoints}.gguf", tiny, spec, initial,
                                               base_sha256="0" * 64)
            kw["trained"] = frozenset(initial)
        out = tmp_path / f"out-{checkpoints}.gguf"
        result = _step(tiny, out, _windows(2), _windows(1, seed=1), "patched", **kw)
        results[checkpoints] = result.adapter if lora else _tensors(out)
        said[checkpoints] = "computed again in the backward pass" in caplog.text
    assert said == {False: False, True: True}  # the graph was rewritten, and only when asked
    kept, again = results[False], results[True]
    assert kept.keys() == again.keys() and len(kept) > 3
    for name in kept:
        assert np.array_equal(kept[name], again[name]), name


def test_the_memory_plan_counts_only_block_outputs_with_checkpoints(patched, tiny):
    """With --gradient-checkpointing the estimate keeps each block's output and one block's activations, so the
    automatic --train choice and the refusal see what the run will use."""
    from jenova_fast.finetune.pipeline import FinetuneConfig, plan_training
    from jenova_fast.finetune.validate import inspect_model

    info = inspect_model(tiny)

    def need(checkpoints: bool) -> int:
        config = FinetuneConfig(base=tiny, data=Path("unused"), n_ctx=512, train="all", engine="patched",
                                gradient_checkpointing=checkpoints, memory_available=2**40)
        return plan_training(info, config).need.activations

    per_output = 4 * 512 * info.n_embd
    assert need(False) - need(True) > (info.n_layer - 1) * per_output
