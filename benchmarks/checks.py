"""The records check: is every approach's output the same as the pure twin's?

A speed figure means nothing for an output that is wrong, so the harness hands every output of every round
to a Checker. The pure twin's first output is the truth; jenova_fast must match it byte for byte, a peer
(which writes the same records in its own order and JSON spelling) as a multiset of parsed records.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path


class Checker:
    """Every output against the pure twin's: as parsed records for peers, byte for byte for jenova_fast."""

    def __init__(self) -> None:
        self.truth: Counter[bytes] | None = None
        self.truth_from = ""
        self.truth_digest = ""
        self.records = 0
        self.verdicts: dict[str, str] = {}  # file digest -> verdict, as outputs repeat across rounds

    def check(self, key: str, output: Path) -> str:
        digest = file_digest(output)
        if self.truth is None:
            if key not in ("pure", "reference"):
                return "unchecked (no pure twin output yet)"
            self.truth, self.truth_from, self.truth_digest = records(output), key, digest
            self.records = sum(self.truth.values())
            return f"{self.records:,} records (the truth)"
        if digest == self.truth_digest:
            return "identical"
        if key in ("pure", "jenova") and self.truth_from == "pure":
            verdict = self.verdicts.get(digest) or self._compare(output)
            self.verdicts[digest] = verdict
            return "NOT byte-identical; " + verdict
        verdict = self.verdicts.get(digest) or self._compare(output)
        self.verdicts[digest] = verdict
        return verdict

    def _compare(self, output: Path) -> str:
        assert self.truth is not None
        got = records(output)
        if got == self.truth:
            return "same records"
        missing = sum((self.truth - got).values())
        extra = sum((got - self.truth).values())
        return f"MISMATCH: {missing:,} missing, {extra:,} extra of {self.records:,}"


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def records(path: Path) -> Counter[bytes]:
    """A multiset of records, each reduced to a digest of its canonical JSON (sorted keys, ASCII)."""
    found: Counter[bytes] = Counter()
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                found[f"unparsable line {number}".encode()] += 1
                continue
            canonical = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
            found[hashlib.blake2b(canonical, digest_size=16).digest()] += 1
    return found
