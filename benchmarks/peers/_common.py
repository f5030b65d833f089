"""What every Python peer shares: the command line and the reference's record wording."""

from __future__ import annotations

import argparse
from pathlib import Path

USER_TEMPLATE = (
    "Hey Jenova, I've been thinking about our conversations on '{topic}'. Can you synthesize your "
    "understanding of this for me? What have you learned about my perspective on it?"
)
ASSISTANT_TEMPLATE = (
    "Of course, {user}. Based on our discussions, I've developed an insight regarding '{topic}'. "
    "My understanding is that: {content}"
)


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--insights-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def record(data: object) -> dict | None:
    """The reference's record for one parsed file, or None when the file is not an insight."""
    if not isinstance(data, dict):
        return None
    content = data.get("content")
    if not isinstance(content, str) or not content:
        return None
    topic = data.get("topic", "general")
    user = data.get("user", "user")
    return {
        "messages": [
            {"role": "user", "content": USER_TEMPLATE.format(topic=topic)},
            {"role": "assistant", "content": ASSISTANT_TEMPLATE.format(user=user, topic=topic, content=content)},
        ]
    }
