"""DuckDB's read_json over the store's glob, as an analyst would write it.

read_json stops the whole query at the first corrupt file; that abort is this peer's result (exit 3 with
DuckDB's message), not a harness failure.
"""

from __future__ import annotations

import os
import sys

import duckdb

from benchmarks.peers._common import parse_args

USER = "Hey Jenova, I''ve been thinking about our conversations on ''' || {topic} || '''. Can you synthesize \
your understanding of this for me? What have you learned about my perspective on it?"
ASSISTANT = "Of course, ' || {user} || '. Based on our discussions, I''ve developed an insight regarding ''' \
|| {topic} || '''. My understanding is that: ' || {content}"


def messages_sql(topic: str, user: str, content: str) -> str:
    """The record as a DuckDB struct; COPY ... (FORMAT json) writes it as {"messages": [...]}."""
    user_text = "'" + USER.format(topic=topic) + "'"
    assistant_text = "'" + ASSISTANT.format(user=user, topic=topic, content=content)
    return (
        f"[{{'role': 'user', 'content': {user_text}}}, "
        f"{{'role': 'assistant', 'content': {assistant_text}}}] AS messages"
    )


def main() -> None:
    args = parse_args(__doc__)
    con = duckdb.connect(config={"threads": max(1, args.threads)})
    pattern = os.path.join(str(args.insights_dir), "**", "*.json").replace("'", "''")
    output = str(args.output).replace("'", "''")
    select = messages_sql("coalesce(topic, 'general')", "coalesce(\"user\", 'user')", "content")
    query = f"""
        COPY (
            SELECT {select}
            FROM read_json('{pattern}', format = 'auto', filename = true,
                           columns = {{topic: 'VARCHAR', content: 'VARCHAR', "user": 'VARCHAR'}})
            WHERE content IS NOT NULL AND content <> '' AND parse_filename(filename) <> 'concerns.json'
        ) TO '{output}' (FORMAT json)
    """
    try:
        con.execute(query)
    except duckdb.Error as exc:
        print(f"duckdb read_json aborted: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
