"""The training record: the reference `prepare_data.py` wording, so existing fine-tunes stay comparable."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_TOPIC = "general"
DEFAULT_USER = "user"
MAX_DEPTH = 512  # nesting allowed in an input document; the native parser is configured the same
INT_MAX_DIGITS = 4300  # Python's default int() digit limit: a longer JSON integer fails json.loads


@dataclass(frozen=True)
class Insight:
    """One valid insight file: its path and the fields its record is made of."""

    path: str
    topic: str
    content: str
    user: str


# The reference's prompt and answer, split where the insight's fields go in.
USER_PREFIX = "Hey Jenova, I've been thinking about our conversations on '"
USER_SUFFIX = (
    "'. Can you synthesize your understanding of this for me? What have you learned about my perspective on it?"
)
ASSISTANT_PREFIX = "Of course, "
ASSISTANT_MIDDLE = ". Based on our discussions, I've developed an insight regarding '"
ASSISTANT_SUFFIX = "'. My understanding is that: "


def insight_messages(topic: str, content: str, user: str) -> dict[str, Any]:
    return chat_record(
        f"{USER_PREFIX}{topic}{USER_SUFFIX}",
        f"{ASSISTANT_PREFIX}{user}{ASSISTANT_MIDDLE}{topic}{ASSISTANT_SUFFIX}{content}",
    )


def chat_record(user_text: str, assistant_text: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": assistant_text},
        ]
    }


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dumps_line(record: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, one line: the output format both implementations must match byte for byte.

    A lone surrogate (an input file may hold "\\ud800", which Python's json reads) is written as its
    \\udXXX escape, as json.dumps with ensure_ascii writes it, so the line stays valid UTF-8."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape_surrogate, text).encode("utf-8")
