"""The assistant's own prepare_data.py, as written: glob every *.json, json.load each, one line per insight.

Differences from the original, so its record set equals jenova-fast's: `concerns.json` and files whose
`content` is not a non-empty string are skipped, and a corrupt file is skipped instead of printed.
"""

from __future__ import annotations

import glob
import json
import os

from benchmarks.peers._common import parse_args, record


def main() -> None:
    args = parse_args(__doc__)
    paths = glob.glob(os.path.join(args.insights_dir, "**", "*.json"), recursive=True)
    with open(args.output, "w", encoding="utf-8") as out:
        for path in paths:
            if os.path.basename(path) == "concerns.json" or not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8") as f:
                try:
                    rec = record(json.load(f))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
            if rec is not None:
                out.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
