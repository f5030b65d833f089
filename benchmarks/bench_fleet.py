"""The fleet on a LocalCluster vs the same chains one after another, on this machine.

    python -m benchmarks.bench_fleet [--users 8] [--insights 24] [--epochs 1] [--workers N] [--base MODEL.gguf]
                                     [--json]

Both sides start from the same seeded stores (two copies) and run the same chain per user (prepare, CPA
observe, finetune, install; `jenova_fast.fleet.chain`):

- sequential: `run_chain` for each user in turn, in this process, each training with every core;
- fleet: `run_fleet` on a LocalCluster of worker processes (`--workers`, default Dask's split of the cores),
  each training with its worker's cores; timed with and without starting the cluster.

The base is the tiny model unless `--base` names another (a small real shape: make one with
`python -m benchmarks.finetune_models`). The ratio is sequential seconds over fleet seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from jenova_fast.fleet import FleetOptions, UserPaths, base_identity, open_client, run_chain, run_fleet
from jenova_fast.fleet.cluster import available_cores, local_shape, quiet_dask_logs
from jenova_fast.fleet.demo import write_fleet


def _sequential(root: Path, users: list[str], options: FleetOptions) -> dict[str, Any]:
    base = base_identity(Path(options.base))
    start = time.perf_counter()
    steps = 0
    for user in users:
        _, _, trained, _ = run_chain(UserPaths(root, user), options, base)
        steps += trained.steps
    return {"seconds": time.perf_counter() - start, "steps": steps, "threads": options.threads}


def _fleet(root: Path, users: list[str], options: FleetOptions, workers: int | None) -> dict[str, Any]:
    start = time.perf_counter()
    n, threads = local_shape(workers, None)
    with open_client(workers=n, threads_per_worker=threads, dashboard=False) as client:
        client.wait_for_workers(n)
        up = time.perf_counter()
        report = run_fleet(client, root, users, options)
        ran = time.perf_counter()
    failed = [o.line() for o in report.users if o.outcome != "installed"]
    if failed:
        raise SystemExit(f"bench_fleet: the fleet did not install every model: {failed}")
    return {"seconds": ran - up, "seconds_with_startup": ran - start, "startup": up - start, "workers": n,
            "threads_per_worker": threads, "steps": sum(o.steps or 0 for o in report.users)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--insights", type=int, default=24, help="per user (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: Dask's split)")
    p.add_argument("--base", type=Path, default=None, help="base model (default: the tiny model)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    quiet_dask_logs()
    logging.getLogger("jenova_fast").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    try:
        seq_root, fleet_root = work / "sequential", work / "fleet"
        users = write_fleet(seq_root, args.users, args.insights, model=args.base is None)
        write_fleet(fleet_root, args.users, args.insights, model=False)
        base = args.base or seq_root / "tiny-base.gguf"
        cores = available_cores()
        common = {"base": base, "epochs": args.epochs, "n_ctx": args.ctx, "lr": args.lr, "eval_fraction": 0.1}
        sequential = _sequential(seq_root, users, FleetOptions(**common, threads=cores))
        fleet = _fleet(fleet_root, users, FleetOptions(**common), args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "users": args.users, "insights_per_user": args.insights, "base": str(args.base or "tiny"),
        "cores": cores, "load_average": os.getloadavg(), "python": platform.python_version(),
        "sequential": sequential, "fleet": fleet,
        "ratio": sequential["seconds"] / fleet["seconds"],
        "ratio_with_startup": sequential["seconds"] / fleet["seconds_with_startup"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.users} users x {args.insights} insights, {cores} cores, load average "
          f"{', '.join(f'{x:.1f}' for x in result['load_average'])}")
    print(f"  one after another, {cores} threads each: {sequential['seconds']:7.1f} s, {sequential['steps']} steps")
    print(f"  fleet, {fleet['workers']} workers x {fleet['threads_per_worker']} threads:    {fleet['seconds']:7.1f} s "
          f"(+{fleet['startup']:.1f} s to start the cluster), {fleet['steps']} steps")
    print(f"  ratio: {result['ratio']:.2f}x ({result['ratio_with_startup']:.2f}x counting the cluster's start)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
