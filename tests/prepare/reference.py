"""The reference semantics, and helpers to compare outputs."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path


def reference_records(insights_dir: Path) -> list[dict]:
    """The assistant's own prepare_data.py (v2.1), with only its crashes turned into skips and the issue's
    rule that `content` must be a string: what our record set must equal."""
    records = []
    for file_path in glob.glob(os.path.join(insights_dir, "**", "*.json"), recursive=True):
        try:
            with open(file_path, encoding="utf-8") as f:
                data = json.load(f)
            topic = data.get("topic", "general")
            content = data.get("content")
            user = data.get("user", "user")
        except (ValueError, AttributeError, OSError):  # the reference crashed on the last two
            continue
        if not content or not isinstance(content, str):
            continue
        instruction = (
            f"Hey Jenova, I've been thinking about our conversations on '{topic}'. Can you synthesize your "
            "understanding of this for me? What have you learned about my perspective on it?"
        )
        response = (
            f"Of course, {user}. Based on our discussions, I've developed an insight regarding '{topic}'. "
            f"My understanding is that: {content}"
        )
        records.append(
            {"messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]}
        )
    return records


def canonical(records: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def read_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.decode("utf-8").split("\n")[:-1]]
