"""`--balance-topics`: cap each topic's share of the training set (the caps come from a callable: the CLI
passes the CPA's), so the fine-tune follows what the user talks about rather than one runaway topic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping


class TopicBalancer:
    """Keeps `caps[t]` of a topic's `counts[t]` records, spread evenly over them in path order (so the kept
    ones span the topic's whole history rather than its oldest files)."""

    def __init__(self, counts: Mapping[str, int], caps: Mapping[str, int]) -> None:
        self.counts = dict(counts)
        self.caps = {t: min(int(caps.get(t, n)), n) for t, n in self.counts.items()}
        self.seen: Counter[str] = Counter()
        self.dropped = 0

    def keep(self, topic: str) -> bool:
        i = self.seen[topic]
        self.seen[topic] = i + 1
        n, cap = self.counts[topic], self.caps[topic]
        kept = (i + 1) * cap // n > i * cap // n
        self.dropped += not kept
        return kept

    def filter(self, chunk: bytes, topics: list[str]) -> bytes:
        """The lines of `chunk` (one per topic, in order) that are kept."""
        lines = chunk.split(b"\n")
        if len(lines) != len(topics) + 1 or lines[-1]:
            raise AssertionError("each record is one line")
        return b"".join(line + b"\n" for line, topic in zip(lines, topics, strict=False) if self.keep(topic))

