"""Pure-Python twin of `_jsonl.pyx`: the same three functions over `json.dumps`."""

from __future__ import annotations

import json

from jenova_fast.prepare.records import Metadata, chat_record, dumps_line, insight_answer, insight_question


def format_insight(
    topic: str, content: str, user: str, fmt: str = "messages", metadata: Metadata | None = None
) -> bytes:
    return dumps_line(chat_record(insight_question(topic), insight_answer(topic, content, user), fmt, metadata))


def format_chat(user_text: str, assistant_text: str, fmt: str = "messages", metadata: Metadata | None = None) -> bytes:
    return dumps_line(chat_record(user_text, assistant_text, fmt, metadata))


def escape(text: bytes) -> bytes:
    return json.dumps(text.decode("utf-8"), ensure_ascii=False)[1:-1].encode("utf-8")
