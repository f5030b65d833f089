"""One training step in a child process, for an architecture llama.cpp is not known to differentiate.

ggml aborts the whole process (SIGABRT) when a graph needs a backward pass it does not have (LayerNorm,
GELU, GEGLU, ...); that must never happen to the user's process, so an unknown architecture is tried here
first, on the real working copy and the real tensor selection, and refused with ggml's own words if it dies.

    python -m jenova_fast.finetune.probe WORK.gguf N_CTX NAMES.txt [ENGINE]
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from jenova_fast.finetune.errors import FinetuneError

log = logging.getLogger(__name__)


def probe(work: Path, trained: tuple[str, ...], n_ctx: int, *, architecture: str, spec: str,
          engine: str = "stock") -> None:
    """Raise FinetuneError if one step of training `trained` in `work` on `engine` kills the process."""
    log.info("probing one training step of architecture %r in a child process", architecture)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as names:
        names.write("\n".join(trained))
    try:
        done = subprocess.run([sys.executable, "-m", "jenova_fast.finetune.probe", str(work), str(n_ctx), names.name,
                               engine],
                              capture_output=True, text=True, timeout=3600, check=False)
    finally:
        os.unlink(names.name)
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if "GGML" in line or "ggml" in line or "error" in line]
        raise FinetuneError(
            f"{work}: llama.cpp cannot train --train {spec} of architecture {architecture!r}: one step in a child "
            f"process ended with exit {done.returncode} ({(said or done.stderr.splitlines() or ['no output'])[-1]}); "
            "its graph needs a backward pass ggml lacks; try --train head")


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from jenova_fast.finetune.train_inprocess import train_inprocess
    from jenova_fast.finetune.windows import Windows

    work, n_ctx, names_file, *engine = (argv or sys.argv[1:])[:4]
    trained = frozenset(Path(names_file).read_text(encoding="utf-8").split())
    rows = np.full((2, int(n_ctx) + 1), 1, dtype=np.int32)
    train_inprocess(work, None, lambda _epoch: Windows(rows[:1]), Windows(rows[1:]), epochs=1, lr=1e-9, threads=1,
                    trained=trained, engine_kind=engine[0] if engine else "stock")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
