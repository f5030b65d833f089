"""Fine-tuning at real model shapes: seconds per step, tokens/s and peak RSS of `--train all` vs `last:2`,
on F32 and Q4_K_M bases, beside a raw `llama-finetune` and PyTorch on the CPU.

    python -m benchmarks.bench_finetune [--models smollm2-135m,qwen2.5-0.5b,llama-3.2-1b] [--folder DIR]
        [--ctx 256] [--threads N] [--steps 4] [--frozen-study] [--json out.json]

Models are random-weight GGUFs with the true shapes (benchmarks/finetune_models.py, cached in --folder). Each
measurement runs in its own process (peak RSS is that process's): the working copy is written by one child, the
steps timed in another through `train_inprocess`, the median step after the first. A configuration whose memory
estimate does not fit the available memory is skipped and its estimate shown. Peers, each where present:
`llama-finetune` (on PATH or $JENOVA_LLAMA_FINETUNE) on the same F32 file, timed as the difference of two runs
(so loading and saving cancel out); PyTorch (`benchmarks/peers/torch_llama.py`) on the same shape and trainable
set, with PEFT's LoRA for `lora:R` where peft is installed. "h/1k insights" is the time of one epoch over 1,000
insights at the default stride (ctx/2: each token is trained twice), from the demo store's median record length
at 4 bytes per token.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.finetune_models import SHAPES, ensure_model

BYTES_PER_TOKEN = 4.0  # English text in the BPE vocabularies of these models


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: one working copy or one timed training run."""
    import numpy as np

    from jenova_fast.finetune import working_copy
    from jenova_fast.finetune.metadata import open_reader
    from jenova_fast.finetune.train_inprocess import train_inprocess
    from jenova_fast.finetune.trainable import select
    from jenova_fast.finetune.validate import inspect_model
    from jenova_fast.finetune.windows import Windows

    info = inspect_model(spec["base"])
    lora = spec["train"].startswith("lora")
    selection = select("attn,ffn" if lora else spec["train"], info.tensors, info.n_layer)
    if spec["phase"] == "work" and lora:  # an adapter trains over the base as it is
        return {"work": spec["base"], "work_mb": Path(spec["base"]).stat().st_size / 2**20, "types": []}
    if spec["phase"] == "work":
        if spec.get("frozen_as"):  # the study: every frozen matrix in one type, whatever the table says
            working_copy.frozen_type = lambda base_type, *, in_backward, matrix, gpu, lean=False: (  # type: ignore
                spec["frozen_as"] if matrix and base_type != "F32" else base_type)
        work = working_copy.plan(open_reader(spec["base"]), set(selection.trained))
        path = working_copy.working_copy(Path(spec["base"]), work) if not spec.get("frozen_as") else \
            working_copy.write_working_copy(spec["base"], work, spec["work"])
        return {"work": str(path), "work_mb": Path(path).stat().st_size / 2**20,
                "types": sorted({t.work_type for t in work.tensors if not t.trained})}
    rng = np.random.default_rng(0)
    rows = rng.integers(0, info.n_vocab, size=(spec["steps"] + 2, spec["ctx"] + 1), dtype=np.int32)
    trained, init = frozenset(selection.trained), None
    if lora:
        from jenova_fast.finetune import adapter
        from jenova_fast.finetune.lora import initial_adapter

        lora_spec = adapter.parse_adapter(spec["train"])
        _, initial = initial_adapter(open_reader(spec["base"]), info, None, lora_spec.rank, 0)
        init = adapter.write_adapter(Path(tempfile.mkdtemp()) / "init.gguf", spec["base"], lora_spec, initial)
        trained = frozenset(initial)
        selection = type(selection)(spec["train"], tuple(initial), sum(t.size for t in initial.values()))
    result = train_inprocess(spec["work"], None, lambda _epoch: Windows(rows[:-1]), Windows(rows[-1:]), epochs=1,
                             lr=1e-5, threads=spec["threads"], trained=trained, engine_kind=spec.get("engine", "auto"),
                             lora=init, checkpoints=spec.get("checkpoints", False))
    steady = sorted(result.step_seconds[1:])
    per_step = steady[len(steady) // 2]
    return {"s_per_step": per_step, "tokens_per_s": spec["ctx"] / per_step,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trained_params": selection.n_params, "trained_tensors": len(selection.trained)}


def _run_child(spec: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_finetune", "--child", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _estimate(base: Path, spec: str, ctx: int, checkpoints: bool) -> tuple[int, int]:
    """(estimated bytes, available bytes) as `jenova-fast finetune` computes them."""
    from jenova_fast.finetune import adapter, lora, memory
    from jenova_fast.finetune.metadata import open_reader
    from jenova_fast.finetune.pipeline import FinetuneConfig, plan_training
    from jenova_fast.finetune.validate import inspect_model

    info = inspect_model(base)
    if spec.startswith("lora"):
        _, initial = lora.initial_adapter(open_reader(base), info, None, adapter.parse_adapter(spec).rank, 0)
        return lora.memory_need(base, info, spec, initial, ctx, checkpoints)[1].total, memory.available_memory()
    config = FinetuneConfig(base=base, data=Path("unused"), n_ctx=ctx, train=spec, memory_available=2**62,
                            gradient_checkpointing=checkpoints)
    return plan_training(info, config).need.total, memory.available_memory()


def _llama_finetune(program: Path, base: Path, ctx: int, threads: int, steps: int) -> dict[str, Any]:
    """Mean step time of the program, as the wall-time difference of a 1-window and a (1+steps)-window run."""
    from jenova_fast.finetune.runtime import load_model, tokenize

    rng = random.Random(0)
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(40_000))
    with load_model(base, vocab_only=True) as vocab:
        def n_tokens(text: str) -> int:
            return len(tokenize(vocab, text, parse_special=False, add_bos=True))

        def text_for(windows: int) -> str:  # the shortest prefix giving exactly `windows` windows
            need = ctx + 1 + windows * (ctx // 2)
            lo, hi = 1, len(words)
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (mid + 1, hi) if n_tokens(words[:mid]) < need else (lo, mid)
            return words[:lo]

        texts = {n: text_for(n) for n in (1, 1 + steps)}
    seconds, peak = {}, 0.0
    env = {**os.environ, "OMP_WAIT_POLICY": "passive"}
    with tempfile.TemporaryDirectory() as tmp:
        for n, text in texts.items():
            (Path(tmp) / "t.txt").write_text(text, encoding="utf-8")
            cmd = [str(program), "-m", str(base), "-f", str(Path(tmp) / "t.txt"), "-o", str(Path(tmp) / "o.gguf"),
                   "-c", str(ctx), "-b", str(ctx), "-ub", str(ctx), "-t", str(threads), "-epochs", "1",
                   "-val-split", "0", "-lr", "1e-5", "-ngl", "0"]
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            seconds[n] = time.perf_counter() - start
            peak = max(peak, usage.ru_maxrss / 1024)
            if proc.returncode != 0:
                return {"error": f"llama-finetune exit {proc.returncode}"}
    return {"s_per_step": (seconds[1 + steps] - seconds[1]) / steps, "peak_rss_mb": peak}


def _torch(shape: str, spec: str, ctx: int, threads: int, steps: int) -> dict[str, Any]:
    try:
        import torch  # noqa: F401
        if spec.startswith("lora"):
            import peft  # noqa: F401
    except ImportError as e:
        return {"error": f"{e.name} not installed (an optional peer: pip install {e.name})"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.peers.torch_llama", "--shape", shape, "--train", spec,
                           "--ctx", str(ctx), "--threads", str(threads), "--steps", str(steps)],
                          capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def demo_tokens_per_record() -> float:
    """Median tokens of one rendered (ChatML) demo record, at BYTES_PER_TOKEN."""
    import statistics

    from jenova_fast import demo, prepare

    with tempfile.TemporaryDirectory() as tmp:
        demo.write_store(Path(tmp) / "store", insights=2000, seed=0)
        out = Path(tmp) / "train.jsonl"
        prepare(Path(tmp) / "store", out, threads=1)
        sizes = []
        for line in out.read_text(encoding="utf-8").splitlines():
            messages = json.loads(line)["messages"]
            text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
            sizes.append(len(text.encode("utf-8")))
    return statistics.median(sizes) / BYTES_PER_TOKEN


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(SHAPES),
                   help="shapes (%(default)s) and/or paths of real .gguf files, comma-separated")
    p.add_argument("--folder", type=Path, default=Path.home() / ".cache" / "jenova-fast" / "bench-models")
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--configs", default="all:F32,last:2:F32,last:2:Q4_K_M",
                   help="SPEC:BASE_TYPE pairs (default: %(default)s)")
    p.add_argument("--frozen-study", action="store_true",
                   help="on the first model: last:2 with frozen tensors kept as Q4_K_M stores them vs Q8_0/F16/F32")
    p.add_argument("--study-train", default="last:2", help="the --train of the frozen-type study")
    p.add_argument("--tied", action="store_true", help="the models' real layout: output head tied to token_embd")
    p.add_argument("--engines", default="stock,patched",
                   help="llama.cpp engines to time each config on, in turn (default: %(default)s)")
    p.add_argument("--checkpoints", action="store_true",
                   help="keep only each block's output and recompute the rest in the backward pass (patched engine)")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--quality", default=None, metavar="FLAGS",
                   help="also run the recall benchmark (benchmarks.bench_quality) with these finetune flags ('' for "
                        "the defaults) on the real SmolLM2 in --folder")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0

    from jenova_fast.finetune.train_program import find_program

    program = None if args.no_peers else find_program()
    per_record = demo_tokens_per_record()
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {os.cpu_count()} cpus, threads {args.threads}, "
          f"ctx {args.ctx}, {args.steps} timed steps; demo record median {per_record:.0f} tokens", flush=True)
    rows: list[dict[str, Any]] = []
    header = "| model | train | base | engine | s/step | tokens/s | peak RSS | estimate | h/1k insights | vs |"
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    for key in args.models.split(","):
        for config in filter(None, args.configs.split(",")):
            spec, _, qtype = config.rpartition(":")
            # a real model's file instead of a shape: its own types, whatever the config says
            base = Path(key) if key.endswith(".gguf") else ensure_model(args.folder, key, qtype, tied=args.tied).path
            qtype = "as downloaded" if key.endswith(".gguf") else qtype
            need, have = _estimate(base, spec, args.ctx, args.checkpoints)
            name = (Path(key).name if key.endswith(".gguf") else key) + (" (tied)" if args.tied else "")
            row: dict[str, Any] = {"model": name, "train": spec, "base": qtype, "estimate_mb": need / 2**20,
                                   "available_mb": have / 2**20}
            if need * 1.15 > have:
                row["skipped"] = f"needs ~{need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB available"
                rows.append(row)
                _print(row)
                continue
            work = _run_child({"phase": "work", "base": str(base), "train": spec})
            by_engine: dict[str, dict[str, Any]] = {}
            engines = ["patched"] if spec.startswith("lora") else args.engines.split(",")  # stock has no LoRA
            for engine in engines:  # the engines back to back, so the machine's load drifts less
                row = {**row, "engine": engine + (", recomputed" if args.checkpoints else ""), **work}
                if "error" not in work:
                    row.update(_run_child({"phase": "train", "base": str(base), "work": work["work"], "train": spec,
                                           "ctx": args.ctx, "threads": args.threads, "steps": args.steps,
                                           "engine": engine, "checkpoints": args.checkpoints}))
                if "s_per_step" in row:
                    row["hours_per_1k"] = 1000 * per_record * 2 / args.ctx * row["s_per_step"] / 3600
                    first = by_engine.get(args.engines.split(",")[0])
                    if first is not None and first is not row:
                        row["speedup_vs_first"] = first["s_per_step"] / row["s_per_step"]
                        row["first_engine"] = first["engine"]
                        row["rss_vs_first"] = row["peak_rss_mb"] / first["peak_rss_mb"]
                    by_engine[engine] = row
                rows.append(row)
                _print(row)
            row = by_engine.get("patched") or row
            if not args.no_peers and "s_per_step" in row and qtype == "F32":
                peers = []
                if spec == "all" and program is not None:
                    peers.append({"model": key, "base": qtype, "train": "all (llama-finetune)",
                                  **_llama_finetune(program, base, args.ctx, args.threads, args.steps)})
                peers.append({"model": key, "base": "fp32", **_torch(key, spec, args.ctx, args.threads, args.steps),
                              "train": f"{spec} (PyTorch)"})
                for peer in peers:
                    if "s_per_step" in peer:
                        peer["tokens_per_s"] = args.ctx / peer["s_per_step"]
                        peer["ours_vs_peer"] = row["s_per_step"] / peer["s_per_step"]
                    rows.append(peer)
                    _print(peer)
        if args.frozen_study and key == args.models.split(",")[0]:
            base = ensure_model(args.folder, key, "Q4_K_M").path
            study = args.study_train
            row = {"model": key, "train": study, "base": "Q4_K_M, frozen per the table"}
            work = _run_child({"phase": "work", "base": str(base), "train": study})
            row.update(work)
            row.update(_run_child({"phase": "train", "base": str(base), "work": work["work"], "train": study,
                                   "ctx": args.ctx, "threads": args.threads, "steps": args.steps}))
            rows.append(row)
            _print(row)
            for frozen in ("Q8_0", "F16", "F32"):
                with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
                    work = _run_child({"phase": "work", "base": str(base), "train": study, "frozen_as": frozen,
                                       "work": str(Path(tmp) / "w.gguf")})
                    row = {"model": key, "train": study, "base": f"Q4_K_M, frozen as {frozen}", **work}
                    if "error" not in work:
                        row.update(_run_child({"phase": "train", "base": str(base), "work": work["work"],
                                               "train": study, "ctx": args.ctx, "threads": args.threads,
                                               "steps": args.steps}))
                    rows.append(row)
                    _print(row)
    if args.quality is not None:  # what the steps buy: the facts a fine-tune says back
        subprocess.run([sys.executable, "-m", "benchmarks.bench_quality", "--folder", str(args.folder), "--",
                        *args.quality.split()], check=False)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def _print(row: dict[str, Any]) -> None:
    if "skipped" in row or "error" in row:
        print(f"| {row['model']} | {row['train']} | {row['base']} | {row.get('engine', '')} | "
              f"{row.get('skipped') or row.get('error')} | | | {row.get('estimate_mb', 0) / 1024:.1f} GiB | | |",
              flush=True)
        return
    est = f"{row['estimate_mb'] / 1024:.2f} GiB" if "estimate_mb" in row else ""
    hours = f"{row['hours_per_1k']:.2f}" if "hours_per_1k" in row else ""
    versus = (f"{row['speedup_vs_first']:.2f}x faster than {row['first_engine']}, "
              f"{row['rss_vs_first']:.2f}x RSS" if "speedup_vs_first" in row else "")
    if "ours_vs_peer" in row:
        versus = f"ours takes {row['ours_vs_peer']:.2f}x its time"
    tokens = f"{row.get('tokens_per_s', 0):.0f}" if "tokens_per_s" in row else ""
    print(f"| {row['model']} | {row['train']} | {row['base']} | {row.get('engine', '')} | {row['s_per_step']:.2f} "
          f"| {tokens} | "
          f"{row['peak_rss_mb'] / 1024:.2f} GiB | {est} | {hours} | {versus} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
