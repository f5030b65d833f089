"""Pure-Python twin of `_jsonl.pyx`: the same three functions over `json.dumps`."""

from __future__ import annotations

import json

from jenova_fast.prepare.records import chat_record, dumps_line, insight_messages


def format_insight(topic: str, content: str, user: str) -> bytes:
    return dumps_line(insight_messages(topic, content, user))


def format_chat(user_text: str, assistant_text: str) -> bytes:
    return dumps_line(chat_record(user_text, assistant_text))


def escape(text: bytes) -> bytes:
    return json.dumps(text.decode("utf-8"), ensure_ascii=False)[1:-1].encode("utf-8")
