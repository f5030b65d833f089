"""Replay corpus directories through a harness's check, then mutate them blindly for a while: for builds
where libFuzzer's coverage cannot run (an ASan/UBSan build with libasan LD_PRELOADed takes over the
coverage hooks), and without atheris.

    python -m tests.fuzz.replay prepare DIR... [--seconds 300] [--seed 1]

A failing input is written to /tmp/jf-replay-<harness>-<sha1> before the error is raised.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.fuzz import checks, mutate


def byte_mutation(rng: random.Random) -> Callable[[bytes, int], bytes]:
    """A small stand-in for libFuzzer's byte mutations: flip, insert, erase, repeat a chunk."""

    def mutate_bytes(data: bytes, max_size: int) -> bytes:
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(out))
            op = rng.randrange(4)
            if op == 0 and at < len(out):
                out[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                out[at:at] = rng.choice((bytes([rng.randrange(256)]), b'"', b"\\u", b"[", b"{", b"\xef\xbb\xbf"))
            elif op == 2:
                del out[at : at + rng.randint(1, 16)]
            else:
                out[at:at] = out[at : at + rng.randint(1, 64)] * rng.randint(1, 8)
        return bytes(out[:max_size])

    return mutate_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("harness", choices=("prepare", "history"))
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=0.0, help="blind mutation after the replay")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    scratch = checks.scratch_dir(f"jf-replay-{args.harness}-")
    check = checks.check_insight if args.harness == "prepare" else checks.check_history
    mutator = mutate.custom_mutator if args.harness == "prepare" else mutate.custom_line_mutator
    inputs = [p.read_bytes() for d in args.dirs for p in sorted(d.iterdir()) if p.is_file()]
    rng = random.Random(args.seed)
    fallback = byte_mutation(rng)

    def run(data: bytes) -> None:
        try:
            check(data, scratch)
        except BaseException:
            path = Path(f"/tmp/jf-replay-{args.harness}-{hashlib.sha1(data).hexdigest()}")
            path.write_bytes(data)
            print(f"replay: failing input written to {path}", file=sys.stderr)
            raise

    start = time.perf_counter()
    for data in inputs:
        run(data)
    replayed = time.perf_counter() - start
    mutated = 0
    while inputs and time.perf_counter() - start < replayed + args.seconds:
        run(mutator(rng.choice(inputs), 1 << 16, rng.getrandbits(32), fallback))
        mutated += 1
    seconds = time.perf_counter() - start
    print(f"replay: {len(inputs)} inputs replayed in {replayed:.1f}s, {mutated} mutated in "
          f"{seconds - replayed:.1f}s ({mutated / max(seconds - replayed, 1e-9):.0f}/s): all agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
