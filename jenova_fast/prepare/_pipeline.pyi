from collections.abc import Callable, Collection

from jenova_fast.prepare.report import ScanStats, Skip, SkipReason

def run(
    roots: list[str],
    *,
    max_bytes: int,
    follow_symlinks: bool,
    threads: int,
    write: Callable[[bytes], object] | int,
    on_skip: Callable[[Skip], object],
    progress: Callable[[int, int, int | None], object],
    count_total: bool = False,
    topics: list[str] | None = None,
    fmt: str = "messages",
    metadata: bool = False,
    eval_fraction: float = 0.0,
    write_eval: Callable[[bytes], object] | None = None,
    fields: list[tuple[str, str, str]] | None = None,
    drop: Collection[str] | None = None,
) -> tuple[int, ScanStats]: ...
def format_insight(
    topic: str, content: str, user: str, fmt: str = "messages", metadata: tuple[str, str, str | None] | None = None
) -> bytes: ...
def format_chat(
    user_text: str, assistant_text: str, fmt: str = "messages", metadata: tuple[str, str, str | None] | None = None
) -> bytes: ...
def parse_insight(data: bytes) -> tuple[str, str, str, str | None, str | None] | SkipReason: ...
def held_out(identity: bytes, fraction: float) -> bool: ...
def count_files(roots: list[str], follow_symlinks: bool) -> int: ...
