"""`jenova-fast engine`: build the patched llama.cpp, say which engine a fine-tune will use, check, clean."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from jenova_fast._signals import status as interrupted_status
from jenova_fast.engine import build, pin
from jenova_fast.engine.build import EngineError
from jenova_fast.engine.patching import header
from jenova_fast.progress import ProgressBar


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jenova-fast engine",
                                description="The patched llama.cpp that `jenova-fast finetune` trains with.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help=f"build llama.cpp {pin.LLAMA_CPP_COMMIT[:9]} with our patches (minutes, once)")
    b.add_argument("--gpu", choices=sorted(build.GPU_FLAGS), default=None,
                   help="also build a GPU backend (CMAKE_ARGS is honoured too, as llama-cpp-python does)")
    b.add_argument("--source", type=Path, default=None,
                   help=f"a local copy of {pin.SDIST} (default: downloaded by pip, checked by SHA-256)")
    b.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: the free cores)")
    b.add_argument("--force", action="store_true", help="build again even if this patch set is built")
    b.add_argument("--no-check", action="store_true", help="skip the gradient check after the build")
    sub.add_parser("status", help="which engine `finetune` will use, and the patches").add_argument(
        "--json", action="store_true")
    sub.add_parser("check", help="each patched backward pass against finite differences")
    sub.add_parser("clean", help="delete every engine build and the downloaded source")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"build": _build, "status": _status, "check": _check, "clean": _clean}[args.command](args)
    except EngineError as exc:
        print(f"jenova-fast engine: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the build folder is a temp one: a partial build is never found as built
        print("jenova-fast engine: interrupted; nothing was installed", file=sys.stderr)
        return interrupted_status()


def _build(args: argparse.Namespace) -> int:
    done = None if args.force else build.find(args.gpu)
    if done is not None:
        print(f"engine: already built ({done.folder})")
        return 0
    started = time.monotonic()
    bar = ProgressBar("engine build", "steps")
    last = [0, 0]
    print(f"engine: building llama.cpp {pin.LLAMA_CPP_COMMIT[:9]} with {len(build.patches())} patches "
          f"({', '.join(p.stem for p in build.patches())}); 2-3 minutes on 2 idle cores", file=sys.stderr)
    def progress(done: int, total: int) -> None:
        last[:] = done, total
        bar.update(done, total, time.monotonic() - started)

    done = build.build(gpu=args.gpu, source=args.source, jobs=args.jobs, force=args.force, progress=progress)
    bar.update(last[1], last[1], time.monotonic() - started, force=True)
    bar.close()
    checked = ""
    if not args.no_check:
        from jenova_fast.engine import gradcheck

        results = gradcheck.check_all()
        checked = f"; its backward passes pass {len(results)} checks against finite differences and exact gradients"
    print(f"engine: built in {time.monotonic() - started:.0f} s: {done.library}{checked}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from jenova_fast.engine.library import choose

    choice = choose("auto")
    found = build.find()
    subjects = {p.name: header(p).splitlines()[0].removeprefix("Subject: ") for p in build.patches()}
    status = {"engine": choice.kind, "reason": choice.reason, "pin": pin.LLAMA_CPP_COMMIT,
              "llama_cpp_python": pin.LLAMA_CPP_PYTHON, "library": str(found.library) if found else None,
              "patches": subjects,
              "builds": [str(b.folder) for b in build.built()]}
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"engine: {choice.kind} ({choice.reason})")
    print(f"llama.cpp {pin.LLAMA_CPP_COMMIT[:9]} (as vendored by llama-cpp-python {pin.LLAMA_CPP_PYTHON})")
    for name, subject in subjects.items():
        print(f"  {name}: {subject}")
    return 0


def _check(_args: argparse.Namespace) -> int:
    from jenova_fast.engine import gradcheck

    for result in gradcheck.check_all():
        print(f"  {result}")
    return 0


def _clean(_args: argparse.Namespace) -> int:
    folder = build.engines_dir()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    shutil.rmtree(folder, ignore_errors=True)
    print(f"engine: removed {folder} ({size / 2**20:.0f} MiB)")
    return 0
