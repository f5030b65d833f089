"""A small seeded fleet to try `jenova-fast fleet` on, and for its tests and benchmark: users with short
insight stores (`<root>/users/<name>/insights/<topic>/insight_*.json`) of a learnable shape, and the tiny model.

    python -m jenova_fast.fleet.demo fleet-demo --users 8 --insights 24
    jenova-fast fleet --root fleet-demo --base fleet-demo/tiny-base.gguf --ctx 256 --lr 2e-3 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import datetime, timedelta
from pathlib import Path

TOPICS = ["sleep", "coffee", "running", "python", "gardening", "music", "reading", "budget", "cooking", "travel"]
EFFECTS = ["helps", "hurts", "improves", "changes", "shapes"]
OBJECTS = ["my focus", "my mood", "my energy", "my evenings", "my mornings", "my work"]
NAMES = ["alice", "bob", "carol", "dmitri", "erin", "farid", "grace", "heidi", "ivan", "josé", "kim", "lena"]


def user_names(n: int) -> list[str]:
    return [NAMES[i] if i < len(NAMES) else f"user{i:03d}" for i in range(n)]


def write_user_store(root: Path, user: str, insights: int, seed: int = 0) -> Path:
    """`insights` insight files of one user under `root/users/<user>/insights`; returns that folder."""
    store = Path(root) / "users" / user / "insights"
    rng = random.Random(f"{user}:{seed}")
    start = datetime(2026, 1, 1, 9, 0, 0) + timedelta(days=rng.randrange(300))
    for i in range(insights):
        topic = rng.choice(TOPICS)
        when = start + timedelta(minutes=17 * i)
        folder = store / topic
        folder.mkdir(parents=True, exist_ok=True)
        insight = {"topic": topic, "content": f"I learned that {topic} {rng.choice(EFFECTS)} {rng.choice(OBJECTS)}.",
                   "user": user, "timestamp": when.isoformat()}
        (folder / f"insight_{when:%Y%m%d_%H%M%S}.json").write_text(json.dumps(insight, indent=4), encoding="utf-8")
    return store


def write_fleet(root: Path, users: int, insights: int, seed: int = 0, *, model: bool = True) -> list[str]:
    """`users` users of `insights` insights each under `root` (and `root/tiny-base.gguf`); their names."""
    names = user_names(users)
    for name in names:
        write_user_store(root, name, insights, seed)
    if model:
        from jenova_fast.finetune.tiny_model import write_tiny_model

        write_tiny_model(Path(root) / "tiny-base.gguf")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jenova_fast.fleet.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path)
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--insights", type=int, default=24, help="per user (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = write_fleet(args.root, args.users, args.insights, args.seed)
    print(f"wrote {len(names)} users ({', '.join(names)}) of {args.insights} insights under {args.root}, and "
          f"{args.root / 'tiny-base.gguf'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
