"""What a prepare run did: counts, the skipped paths with their reasons, bytes and seconds."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jenova_fast.prepare.output import atomic_output
from jenova_fast.prepare.records import json_utf8


class SkipReason(str, enum.Enum):
    """Why an input did not become a record. The values appear in reports and logs."""

    EMPTY_FILE = "empty_file"
    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    NO_CONTENT = "no_content"
    WRONG_TYPE = "wrong_type"
    UNREADABLE = "unreadable"
    VANISHED = "vanished"
    NOT_REGULAR = "not_regular"
    SYMLINK = "symlink_not_followed"
    SYMLINK_LOOP = "symlink_loop"
    INCOMPLETE_PAIR = "incomplete_pair"


# Native code reports reasons as small integers in this order.
REASONS: tuple[SkipReason, ...] = tuple(SkipReason)
# Skips named per reason (the first ones, in input order); the counts stay exact. A history of a million bad
# lines is then a report of kilobytes, not a list held in memory and written whole.
SKIP_EXAMPLES = 100


@dataclass(frozen=True)
class Skip:
    path: str
    reason: SkipReason
    detail: str = ""


@dataclass
class ScanStats:
    """What the walk saw besides records; the native and the pure pipeline both return one."""

    files_seen: int = 0
    bytes_read: int = 0
    ignored: int = 0
    eval_records: int = 0  # of the records, those written to the held-out set (--eval-fraction)
    dropped: int = 0  # valid insights left out because they were in `drop` (--dedup)


@dataclass
class PrepareReport:
    """Returned by `prepare()`; `to_json()` is what `--report FILE.json` writes."""

    output: str | None
    implementation: str
    threads: int
    records: int = 0
    insight_records: int = 0
    history_records: int = 0
    files_seen: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    ignored: int = 0  # concerns.json files: known non-insights, not errors
    balanced_out: int = 0  # valid insights left out by --balance-topics
    eval_output: str | None = None  # --eval-fraction: where the held-out records went
    eval_records: int = 0  # records written there instead of to `output`
    duplicates_dropped: int = 0  # valid insights left out by --dedup
    dedup: dict[str, object] | None = None  # --dedup: mode, threshold, groups with kept and dropped paths
    source_records: dict[str, int] = field(default_factory=dict)  # --sources assumptions, cortex
    too_long: list[dict[str, object]] = field(default_factory=list)  # --max-tokens: source, path, tokens
    longest_tokens: int = 0  # --max-tokens: the longest record seen, in tokens
    skips: list[Skip] = field(default_factory=list)  # the first SKIP_EXAMPLES of each reason
    skip_counts: dict[str, int] = field(default_factory=dict)  # every skip, by reason

    def add_skip(self, skip: Skip) -> None:
        """Count `skip`, and name it while its reason has fewer than SKIP_EXAMPLES named."""
        seen = self.skip_counts.get(skip.reason.value, 0)
        self.skip_counts[skip.reason.value] = seen + 1
        if seen < SKIP_EXAMPLES:
            self.skips.append(skip)

    @property
    def skipped(self) -> dict[str, int]:
        """Every skip, by reason (named in `skips` or not)."""
        return dict(sorted(self.skip_counts.items()))

    @property
    def unnamed(self) -> dict[str, int]:
        """The skips of each reason beyond its SKIP_EXAMPLES named ones."""
        return {reason: n - SKIP_EXAMPLES for reason, n in self.skipped.items() if n > SKIP_EXAMPLES}

    @property
    def files_per_second(self) -> float:
        return self.files_seen / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.items())
        where = f" into {self.output}" if self.output else ""
        return (
            f"prepared {self.records:,} records ({self.insight_records:,} insights, "
            f"{self.history_records:,} history"
            + "".join(f", {n:,} {source}" for source, n in self.source_records.items())
            + f"){where} from {self.files_seen:,} files "
            f"({self.bytes_read / 1e6:,.1f} MB) in {self.seconds:.2f}s "
            f"({self.files_per_second:,.0f} files/s, {self.implementation}, {self.threads} threads); "
            f"skipped {skipped:,}"
            + (f" ({reasons})" if reasons else "")
            + (f"; {self.balanced_out:,} left out by --balance-topics" if self.balanced_out else "")
            + (f"; {self.eval_records:,} held out in {self.eval_output}" if self.eval_output else "")
            + (
                f"; {self.duplicates_dropped:,} duplicates dropped ({self.dedup['groups']:,} groups, "
                f"--dedup {self.dedup['mode']})"
                if self.dedup
                else ""
            )
            + (f"; {len(self.too_long):,} over --max-tokens left out" if self.too_long else "")
        )

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["skips"] = [{"path": s.path, "reason": s.reason.value, "detail": s.detail} for s in self.skips]
        del data["skip_counts"]
        data["skipped"] = self.skipped
        data["skips_not_named"] = self.unnamed  # beyond the first SKIP_EXAMPLES of a reason
        data["files_per_second"] = self.files_per_second
        return data

    def write_json(self, path: str | Path) -> None:
        """Paths that are not UTF-8 (skips, --dedup groups, --max-tokens) are written with their bytes
        escaped as lone surrogates, as the records' metadata writes them: `os.fsencode` of what `json.load`
        reads back is the name on disk."""
        with atomic_output(Path(path), option="--report") as f:
            f.write(json_utf8(json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n"))
