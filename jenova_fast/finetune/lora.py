"""`finetune --adapter lora[:RANK]`: train a LoRA adapter over a frozen base and install it, a few MB.

plan (the matrices that get an adapter) -> data (as a full fine-tune renders it) -> engine (the patched one:
its opt_init offers adapter tensors as parameters) -> the adapter file, checked by loading it over the base.
The base is read as it is, in its own quantized bytes: no working copy (the patched engine runs the backward
pass through any frozen type it can dequantize).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jenova_fast import _fs
from jenova_fast.finetune import adapter, evaluate, memory, recall, runtime, trainable, validate
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.install import install_model
from jenova_fast.finetune.metadata import open_reader
from jenova_fast.finetune.train_inprocess import ProgressCallback, train_inprocess
from jenova_fast.finetune.working_copy import TensorPlan, WorkPlan

if TYPE_CHECKING:
    from jenova_fast.finetune.pipeline import FinetuneConfig, FinetuneReport

log = logging.getLogger(__name__)


def adapter_out(out: Path) -> Path:
    """The default output `models/jenova.gguf` becomes `models/jenova-lora.gguf` for an adapter."""
    return out.with_name("jenova-lora.gguf") if out.name == "jenova.gguf" else out


def finetune_lora(config: FinetuneConfig, progress: ProgressCallback | None = None) -> FinetuneReport:
    """`pipeline.finetune` for a config with `adapter` set; returns its FinetuneReport."""
    from jenova_fast.finetune import pipeline  # the pipeline dispatches here: imported late, no cycle

    started = time.perf_counter()
    if config.trainer != "inprocess":
        raise FinetuneError("--adapter trains in process on the patched engine; leave --trainer out")
    if config.requantize is not None:
        raise FinetuneError("--requantize is for full models; an adapter is F32 and a few MB")
    pipeline._check_config(config)
    spec = adapter.parse_adapter(config.adapter or "lora", config.lora_alpha)
    engine = runtime.choose_engine(config.engine)
    if engine.kind != "patched":
        raise FinetuneError("--adapter needs the patched engine (stock llama.cpp cannot train adapter tensors, "
                            "llama.cpp issue 13485); build it once: jenova-fast engine build")
    threads = runtime.pick_threads(config.threads)
    base, out = Path(config.base), adapter_out(Path(config.out))
    info = validate.inspect_model(base)
    loss = pipeline._loss(config, engine, info)
    reader = open_reader(base)
    selection, initial = initial_adapter(reader, info, config.train, spec.rank, config.seed)
    data = pipeline._training_data(config, info, None)
    have = memory.budget(config.memory_available)
    adapted, need = memory_need(base, info, f"lora:{spec.rank} over {selection.spec}", initial, data.n_ctx,
                                config.gradient_checkpointing)
    n_params = adapted.n_params
    memory.check(adapted, need, have, base, data.n_ctx, option="--adapter",
                 fix="lower the rank" if config.gradient_checkpointing else "add --gradient-checkpointing")
    plan = pipeline.TrainPlan(engine, loss, adapted, _unchanged(reader), need,
                              f"adapter rank {spec.rank}, alpha {spec.alpha:g}", probe=False, available=have)
    log.info("engine: %s (%s); loss on %s", engine.kind, engine.reason, "the answers" if loss == "answer" else
             "every token")
    log.info("training a LoRA adapter: rank %d, alpha %g, on %d matrices (%s): %.2fM parameters; memory about %s",
             spec.rank, spec.alpha, len(initial) // 2, selection.spec, n_params / 1e6, need.describe())
    whole = trainable.select("all", info.tensors, info.n_layer).n_params
    settings = pipeline._settings(config, plan, data, lora_base_params=whole)
    pipeline._plan_notes(plan, data, settings)
    heldout = data.heldout_windows()
    before = evaluate.heldout_loss(base, heldout, threads, gpu_layers=config.gpu_layers)
    log.info("held-out answer loss before: %.4f nats/token", before.loss)
    asked = recall.sample(data.split.train_conversations, config.recall_sample, config.seed)
    recall_before = pipeline._recall(base, asked, config, data, threads)
    base_sha = adapter.sha256(base)
    with _fs.temporary(out, directory=True, exclusive="--out") as tmp:
        init = adapter.write_adapter(tmp / "init.gguf", base, spec, initial, base_sha256=base_sha)
        feed = pipeline._EpochFeed(data, config, settings, plan, progress)
        result = train_inprocess(
            base, None, feed, heldout, epochs=settings.epochs, lr=settings.lr, threads=threads,
            trained=frozenset(initial), gpu_layers=config.gpu_layers, progress=feed.progress,
            engine_kind=engine.kind, lora=init, lr_end=settings.lr_end,
            checkpoints=config.gradient_checkpointing)
        trained = {name: result.adapter[name].reshape(initial[name].shape) for name in initial}
        final = adapter.write_adapter(tmp / out.name, base, spec, trained, base_sha256=base_sha)
        after = evaluate.heldout_loss(base, heldout, threads, gpu_layers=config.gpu_layers, adapter=final)
        if not np.isfinite(after.loss) or after.loss >= before.loss:
            rose = not np.isfinite(after.loss) or after.loss > 1.05 * before.loss  # diverged: the rate is too high
            raise FinetuneError(f"the adapter did not beat the base on the held-out records ({before.loss:.4f} -> "
                                f"{after.loss:.4f}); nothing was installed; "
                                + ("lower --lr: the loss rose" if rose else "raise --lr or --epochs"))
        smoke_messages = data.split.heldout_conversations[0]
        reply = evaluate.smoke_generate(base, smoke_messages, max_tokens=config.smoke_tokens, threads=threads,
                                        adapter=final)
        recall_after = pipeline._recall(base, asked, config, data, threads, adapter=final)
        merged = None
        if config.merge is not None:
            adapter.merge(base, final, tmp / "merged.gguf")
            merged = install_model(tmp / "merged.gguf", Path(config.merge), move=True).installed
        placed = install_model(final, out, validate=True, move=True)  # loaded over its base by llama.cpp

    report_path = Path(config.report) if config.report else Path(config.data).parent / f"{out.stem}.report.json"
    report = pipeline.FinetuneReport(
        base=str(base), working_copy=str(base), out=str(out), installed=str(out) if config.install else None,
        previous=str(placed.previous) if placed.previous else None, trainer="inprocess", engine=engine.kind,
        engine_choice=engine.reason, loss=loss, n_ctx=settings.n_ctx, stride=data.stride, threads=threads,
        gpu_layers=config.gpu_layers, lr=settings.lr, epochs=settings.epochs, train_spec=plan.selection.spec,
        train_choice=plan.choice, trained_tensors=list(initial), trained_params=n_params, converted={},
        frozen_bytes=base.stat().st_size, memory_estimate=need.figures(have), requantized={},
        **pipeline.run_figures(data, result, before, after, started), restored_metadata=[],
        smoke_prompt=next((m["content"] for m in reversed(smoke_messages) if m["role"] == "user"), ""),
        smoke_reply=reply, report=str(report_path), choices=settings.choices, system=config.system,
        packing=config.packing, heldout_in_sample=data.split.in_sample, stopped_early=feed.stopped,
        **pipeline.recall_figures(recall_before, recall_after, result, data, settings),
        notes=[f"LoRA adapter {out} ({out.stat().st_size / 2**20:.1f} MiB) over {base} (SHA-256 {base_sha[:12]}); "
               f"load it with llama.cpp's --lora or Llama(model_path=BASE, lora_path=ADAPTER)"]
              + ([f"merged into a full model: {merged} (the base's types)"] if merged else []),
    )
    _fs.write_bytes_via(report_path, lambda f: f.write((report.to_json() + "\n").encode("utf-8")))
    return report


def initial_adapter(reader: Any, info: validate.ModelInfo, train: str | None, rank: int,
                    seed: int) -> tuple[trainable.Selection, dict[str, np.ndarray]]:
    """The base tensors `train` names (every projection by default), and the step-0 adapter over their matrices:
    an A and a B each."""
    selection = trainable.select(train or adapter.DEFAULT_TARGETS, info.tensors, info.n_layer)
    return selection, adapter.initial_tensors(adapter.targets(reader, selection.trained), rank, seed)


def memory_need(base: Path, info: validate.ModelInfo, label: str, initial: dict[str, np.ndarray], n_ctx: int,
                checkpoints: bool) -> tuple[trainable.Selection, memory.MemoryEstimate]:
    """The adapter as a Selection, and the run's memory: the base as it is, the adapter's state, activations."""
    adapted = trainable.Selection(label, tuple(initial), sum(t.size for t in initial.values()),
                                  max(t.size for t in initial.values()))
    return adapted, memory.estimate(model=info, work_bytes=base.stat().st_size, selection=adapted, n_ctx=n_ctx,
                                    checkpoints=checkpoints, adapter=True)


def _unchanged(reader: Any) -> WorkPlan:
    """A working-copy plan that keeps every tensor as the base has it (the base is trained over as it is)."""
    return WorkPlan([TensorPlan(t.name, int(t.n_elements), t.tensor_type.name, t.tensor_type.name, False)
                     for t in reader.tensors])
