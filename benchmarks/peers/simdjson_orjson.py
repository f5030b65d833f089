"""pysimdjson parses (one reused parser, lazy proxies), orjson writes; one process."""

from __future__ import annotations

import orjson
import simdjson

from benchmarks.peers._common import parse_args, record
from benchmarks.peers.orjson_scandir import walk


def insight_fields(parser: simdjson.Parser, data: bytes) -> dict | None:
    """The fields a record needs, as plain Python values: the parser is reused only once its proxies die."""
    try:
        doc = parser.parse(data)
    except ValueError:  # invalid JSON or UTF-8
        return None
    if not isinstance(doc, simdjson.Object):
        return None
    content = doc.get("content")
    if not isinstance(content, str) or not content:
        return None
    fields = {"content": content}
    for key in ("topic", "user"):
        if key in doc:
            value = doc[key]
            if isinstance(value, simdjson.Object):
                value = value.as_dict()
            elif isinstance(value, simdjson.Array):
                value = value.as_list()
            fields[key] = value
    return fields


def main() -> None:
    args = parse_args(__doc__)
    paths: list[str] = []
    walk(str(args.insights_dir), paths)
    parser = simdjson.Parser()
    with open(args.output, "wb") as out:
        for path in paths:
            with open(path, "rb") as f:
                fields = insight_fields(parser, f.read())
            if fields is not None:
                out.write(orjson.dumps(record(fields)) + b"\n")


if __name__ == "__main__":
    main()
