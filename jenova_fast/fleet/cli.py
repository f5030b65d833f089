"""`jenova-fast fleet`: prepare, observe, fine-tune and install every user's model on a Dask cluster."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from jenova_fast._signals import status as interrupted_status
from jenova_fast.engine import ENGINES
from jenova_fast.finetune.cli import size_arg, stride_arg
from jenova_fast.fleet.plan import FleetError, FleetOptions, default_root, list_users

if TYPE_CHECKING:
    from jenova_fast.fleet.report import FleetReport, StatusLines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jenova-fast fleet",
        description="Prepare, observe, fine-tune and install every user's model, on a Dask cluster (a local one "
                    "by default). Users whose store has not changed since their model was installed are skipped.")
    p.add_argument("--root", type=Path, default=None,
                   help="the folder holding users/<name>/insights (default: ~/.jenova-ai)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--users", default=None, metavar="A,B", help="these users only (comma-separated)")
    who.add_argument("--all-users", action="store_true", help="every user with an insights folder (the default)")
    p.add_argument("--base", "--model-base", required=True, type=Path,
                   help="the base model .gguf, at a path every worker can read")
    where = p.add_argument_group("cluster")
    where.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                       help="a running Dask scheduler (default: a LocalCluster on this machine)")
    where.add_argument("--workers", type=int, default=None,
                       help="LocalCluster worker processes, each one training at a time (default: Dask's split of "
                            "the cores)")
    where.add_argument("--threads-per-worker", type=int, default=None,
                       help="LocalCluster threads per worker: the threads of each training (default: the cores / "
                            "--workers)")
    ft = p.add_argument_group("finetune (as `jenova-fast finetune`)")
    ft.add_argument("--epochs", type=int, default=None,
                    help="default: chosen from each user's data, stopping early (as finetune)")
    ft.add_argument("--lr", type=float, default=None, help="default: chosen from the trained parameters")
    ft.add_argument("--ctx", type=int, default=None,
                    help="a multiple of 256 (default: the smallest that holds the user's longest record)")
    ft.add_argument("--train", default=None, metavar="SPEC", help="what to train (default: chosen by memory)")
    ft.add_argument("--requantize", default=None, metavar="TYPE", help="'base' or a ggml type (default: F32)")
    ft.add_argument("--stride", default=None, type=stride_arg, help="N, 'half' (default) or 'ctx'")
    ft.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    ft.add_argument("--eval-fraction", type=float, default=None,
                    help="records of train.jsonl held out to measure loss (default: 5%%, none under 20 records)")
    ft.add_argument("--split-eval", type=float, default=0.0, metavar="F",
                    help="prepare writes F of each store's insights to eval.jsonl, the held-out set instead")
    ft.add_argument("--template", default=None, help="chat template for bases without one")
    ft.add_argument("--threads", type=int, default=None, help="threads of each training (default: the worker's)")
    ft.add_argument("--max-memory", type=size_arg, default=None, metavar="SIZE",
                    help="memory of each training (default: the worker's memory limit)")
    ft.add_argument("--gpu-layers", type=int, default=0, help="default: %(default)s")
    ft.add_argument("--engine", choices=ENGINES, default="auto", help="patched (when built), stock or auto (default)")
    ft.add_argument("--loss", choices=("answer", "all"), default=None, help="default: answer on the patched engine")
    ft.add_argument("--adapter", default=None, metavar="lora[:RANK]",
                    help="a LoRA adapter per user over the shared base (models/jenova-lora.gguf, a few MB each)")
    ft.add_argument("--lora-alpha", type=float, default=None, help="default: the rank")
    ft.add_argument("--gradient-checkpointing", action="store_true",
                    help="recompute activations in the backward pass: far less memory per training, the same result")
    p.add_argument("--force", action="store_true", help="retrain users whose model is fresh too")
    p.add_argument("--report", type=Path, default=None, metavar="FILE.json", help="each user's outcome as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="only failures and the summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="fleet: %(message)s", stream=sys.stderr)
    root = args.root if args.root is not None else default_root()
    options = FleetOptions(
        base=args.base, epochs=args.epochs, lr=args.lr, n_ctx=args.ctx, train=args.train,
        requantize=args.requantize, stride=args.stride,
        seed=args.seed, eval_fraction=args.eval_fraction, split_eval=args.split_eval, template=args.template,
        threads=args.threads, max_memory=args.max_memory, gpu_layers=args.gpu_layers, engine=args.engine,
        loss=args.loss, adapter=args.adapter, lora_alpha=args.lora_alpha,
        gradient_checkpointing=args.gradient_checkpointing)
    try:
        from jenova_fast.fleet.cluster import quiet_dask_logs

        quiet_dask_logs()  # or the error naming the extra, when dask is missing
        if not args.base.is_file():
            raise FleetError(f"--base {args.base}: no such file; give the path of a GGUF model that every worker can "
                             "read at the same path")
        if args.report is not None and args.report.is_dir():
            raise FleetError(f"--report {args.report}: it is a directory; give a file's path, e.g. "
                             f"{args.report / 'fleet.json'}")
        users = list_users(root, [u for u in args.users.split(",") if u] if args.users else None)
        return _run(args, root, users, options)
    except FleetError as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fleet: interrupted; every installed model is whole (each install is atomic); run again to finish",
              file=sys.stderr)
        return interrupted_status()


def _run(args: argparse.Namespace, root: Path, users: list[str], options: FleetOptions) -> int:
    from jenova_fast.fleet.report import StatusLines

    status = StatusLines(sys.stderr, users, quiet=args.quiet)
    report = _on_cluster(args, root, users, options, status)  # SIGTERM ends like Ctrl-C: the tasks cancelled
    for outcome in report.users:
        if outcome.outcome == "failed":
            print(f"fleet: error: {outcome.line()}", file=sys.stderr)
        elif status.live and not args.quiet:  # elsewhere the status lines said it as it happened
            print(f"fleet: {outcome.line()}", file=sys.stderr)
    written = ""
    if args.report is not None:
        try:
            report.write(args.report)
            written = f"; report {args.report}"
        except OSError as exc:
            print(f"fleet: error: cannot write the report {args.report}: {exc.strerror or exc}; the models are "
                  "installed; choose a writable --report next time", file=sys.stderr)
            print(f"fleet: {report.summary()}")
            return 2
    print(f"fleet: {report.summary()}{written}")
    return 1 if report.failed else 0


def _on_cluster(args: argparse.Namespace, root: Path, users: list[str], options: FleetOptions,
                status: StatusLines) -> FleetReport:
    from jenova_fast.fleet.cluster import dashboard_link, open_client
    from jenova_fast.fleet.run import run_fleet

    with open_client(args.scheduler, workers=args.workers, threads_per_worker=args.threads_per_worker) as client:
        where = args.scheduler or f"a LocalCluster at {client.scheduler.address}"
        link = dashboard_link(client)
        if not args.quiet:
            print(f"fleet: {len(users)} user(s) under {root}, on {where}" + (f"; dashboard {link}" if link else ""),
                  file=sys.stderr)
        return run_fleet(client, root, users, options, force=args.force, on_state=status)
