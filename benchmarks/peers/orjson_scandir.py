"""orjson + os.scandir, the straightforward fast Python: walk, read bytes, parse, dump.

With `--threads N` > 1 the walk's path list is split over N forked processes (threads would share the GIL),
each writing its own part; the parts are concatenated at the end.
"""

from __future__ import annotations

import os
import shutil

import orjson

from benchmarks.peers._common import parse_args, record


def walk(root: str, paths: list[str]) -> None:
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                walk(entry.path, paths)
            elif entry.name.endswith(".json") and entry.name != "concerns.json" and entry.is_file():
                paths.append(entry.path)


def convert(paths: list[str], output: str) -> None:
    with open(output, "wb") as out:
        write = out.write
        for path in paths:
            with open(path, "rb") as f:
                data = f.read()
            try:
                rec = record(orjson.loads(data))
            except orjson.JSONDecodeError:
                continue
            if rec is not None:
                write(orjson.dumps(rec) + b"\n")


def main() -> None:
    args = parse_args(__doc__)
    paths: list[str] = []
    walk(str(args.insights_dir), paths)
    procs = max(1, args.threads)
    if procs == 1:
        convert(paths, str(args.output))
        return
    parts = [f"{args.output}.part{i}" for i in range(procs)]
    children = []
    for i in range(1, procs):
        pid = os.fork()
        if pid == 0:
            try:
                convert(paths[i::procs], parts[i])
            finally:
                os._exit(0)
        children.append(pid)
    convert(paths[0::procs], parts[0])
    for pid in children:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"worker {pid} failed with status {status}")
    with open(args.output, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            os.unlink(part)


if __name__ == "__main__":
    main()
