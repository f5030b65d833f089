"""DuckDB reading every file as a blob (read_blob) and picking fields with its JSON functions.

Unlike read_json this survives corrupt files: decode (UTF-8) and json_valid filter them out row by row.
"""

from __future__ import annotations

import os

import duckdb

from benchmarks.peers._common import parse_args
from benchmarks.peers.duckdb_read_json import messages_sql


def main() -> None:
    args = parse_args(__doc__)
    con = duckdb.connect(config={"threads": max(1, args.threads)})
    pattern = os.path.join(str(args.insights_dir), "**", "*.json").replace("'", "''")
    output = str(args.output).replace("'", "''")
    select = messages_sql(
        "coalesce((doc ->> '$.topic')::VARCHAR, 'general')",
        "coalesce((doc ->> '$.user')::VARCHAR, 'user')",
        "(doc ->> '$.content')::VARCHAR",
    )
    con.execute(f"""
        COPY (
            WITH files AS (
                SELECT filename, try(decode(content)) AS text FROM read_blob('{pattern}')
                WHERE parse_filename(filename) <> 'concerns.json'
            ), docs AS (
                SELECT text::JSON AS doc FROM files WHERE text IS NOT NULL AND json_valid(text)
            )
            SELECT {select} FROM docs
            WHERE json_type(doc) = 'OBJECT' AND json_type(doc, '$.content') = 'VARCHAR'
              AND (doc ->> '$.content') <> ''
        ) TO '{output}' (FORMAT json)
    """)


if __name__ == "__main__":
    main()
