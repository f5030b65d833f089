"""The training record: the reference `prepare_data.py` wording, so existing fine-tunes stay comparable."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_TOPIC = "general"
DEFAULT_USER = "user"
MAX_DEPTH = 512  # nesting allowed in an input document; the native parser is configured the same
NOT_INSIGHTS = frozenset({"concerns.json"})  # .json names in a store that are known not to be insights
INT_MAX_DIGITS = 4300  # Python's default int() digit limit: a longer JSON integer fails json.loads


@dataclass(frozen=True)
class Insight:
    """One valid insight file: its path and the fields its record is made of."""

    path: str
    topic: str
    content: str
    user: str
    cortex_id: str | None = None
    timestamp: str | None = None


# The reference's prompt and answer, split where the insight's fields go in.
USER_PREFIX = "Hey Jenova, I've been thinking about our conversations on '"
USER_SUFFIX = (
    "'. Can you synthesize your understanding of this for me? What have you learned about my perspective on it?"
)
ASSISTANT_PREFIX = "Of course, "
ASSISTANT_MIDDLE = ". Based on our discussions, I've developed an insight regarding '"
ASSISTANT_SUFFIX = "'. My understanding is that: "


def insight_question(topic: str) -> str:
    return f"{USER_PREFIX}{topic}{USER_SUFFIX}"


def insight_answer(topic: str, content: str, user: str) -> str:
    return f"{ASSISTANT_PREFIX}{user}{ASSISTANT_MIDDLE}{topic}{ASSISTANT_SUFFIX}{content}"


def insight_messages(topic: str, content: str, user: str) -> dict[str, Any]:
    return chat_record(insight_question(topic), insight_answer(topic, content, user))


# --sources: where records come from (sources.py reads the last two).
SOURCES = ("insights", "history", "assumptions", "cortex")

# --sources assumptions: what the assistant verified about the user.
ASSUMPTION_QUESTION = "Hey Jenova, what have you come to know about me for certain?"


def assumption_answer(content: str, user: str) -> str:
    return f"{ASSISTANT_PREFIX}{user}. Something I have confirmed about you is that: {content}"


# --sources cortex: the cognitive graph's document and insight nodes.
CORTEX_QUESTIONS = {
    "document": "Hey Jenova, what do you remember from the documents we have gone through together?",
    "insight": "Hey Jenova, what is one of the insights you keep in your cognitive graph about me?",
}
CORTEX_ANSWERS = {
    "document": "From what we read together, I remember this: ",
    "insight": "One insight I keep about you is this: ",
}


def cortex_question(node_type: str) -> str:
    return CORTEX_QUESTIONS[node_type]


def cortex_answer(node_type: str, content: str, user: str) -> str:
    return f"{ASSISTANT_PREFIX}{user}. {CORTEX_ANSWERS[node_type]}{content}"


# --format: what each trainer reads (README). `text` is `messages` rendered with a model's chat template.
FORMATS = ("messages", "sharegpt", "alpaca", "prompt-completion", "text")
Metadata = tuple[str, str, "str | None"]  # (source, path, timestamp)


def chat_record(
    user_text: str, assistant_text: str, fmt: str = "messages", metadata: Metadata | None = None
) -> dict[str, Any]:
    """One question/answer pair as a record of format `fmt`; `metadata` adds {"source", "path", "timestamp"}."""
    record: dict[str, Any]
    if fmt == "messages":
        record = {
            "messages": [{"role": "user", "content": user_text}, {"role": "assistant", "content": assistant_text}]
        }
    elif fmt == "sharegpt":
        record = {"conversations": [{"from": "human", "value": user_text}, {"from": "gpt", "value": assistant_text}]}
    elif fmt == "alpaca":
        record = {"instruction": user_text, "input": "", "output": assistant_text}
    elif fmt == "prompt-completion":
        record = {
            "prompt": [{"role": "user", "content": user_text}],
            "completion": [{"role": "assistant", "content": assistant_text}],
        }
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS[:4])} (text is rendered from messages)")
    if metadata is not None:
        source, path, timestamp = metadata
        record["metadata"] = {"source": source, "path": path, "timestamp": timestamp}
    return record


def format_layout(fmt: str) -> tuple[str, str, str]:
    """A format's literal text before the user's text, between the two texts, and after the assistant's
    (without the closing brace): what the native writer pastes around the escaped strings."""
    line = json.dumps(chat_record("\x01U", "\x01A", fmt), ensure_ascii=False, separators=(",", ":"))
    head, rest = line.split('"\\u0001U"')
    middle, tail = rest.split('"\\u0001A"')
    return head + '"', '"' + middle + '"', '"' + tail[:-1]


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dumps_line(record: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, one line: the output format both implementations must match byte for byte.

    A lone surrogate (an input file may hold "\\ud800", which Python's json reads) is written as its
    \\udXXX escape, as json.dumps with ensure_ascii writes it, so the line stays valid UTF-8."""
    return json_utf8(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


def json_utf8(text: str) -> bytes:
    """JSON text (json.dumps with ensure_ascii=False) as UTF-8, each lone surrogate as its \\udXXX escape:
    one from a "\\ud800" in an input file, or from a file name that is not UTF-8 (os.fsdecode's
    surrogateescape, which os.fsencode of the string json.loads gives back turns into the name's bytes)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape_surrogate, text).encode("utf-8")
