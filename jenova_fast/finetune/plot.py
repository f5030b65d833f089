"""`--plot loss.png`: training loss per step and held-out loss per epoch against steps (the `plot` extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jenova_fast._fs import write_bytes_via
from jenova_fast.finetune.errors import FinetuneError


def plot_losses(report: Any, path: str | os.PathLike[str]) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise FinetuneError(f"--plot needs matplotlib ({exc}); install it with: pip install 'jenova-fast[plot]'"
                            ) from exc
    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps = range(1, len(report.step_losses) + 1)
    ax.plot(steps, report.step_losses, lw=0.8, alpha=0.6, label="train (each step)")
    if len(report.step_losses) >= 20:
        k = max(5, len(report.step_losses) // 50)
        smooth = [sum(report.step_losses[max(0, i - k):i + 1]) / len(report.step_losses[max(0, i - k):i + 1])
                  for i in range(len(report.step_losses))]
        ax.plot(steps, smooth, lw=1.6, label=f"train (mean of {k + 1})")
    xs, ys = zip(*report.eval_points, strict=True) if report.eval_points else ((), ())
    ax.plot(xs, ys, "o-", lw=1.6, label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{Path(report.base).name}: --train {report.train_spec}, ctx {report.n_ctx}, lr {report.lr:g}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        write_bytes_via(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return path
