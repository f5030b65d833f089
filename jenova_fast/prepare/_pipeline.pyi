from collections.abc import Callable

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
) -> tuple[int, ScanStats]: ...
def format_insight(topic: str, content: str, user: str) -> bytes: ...
def format_chat(user_text: str, assistant_text: str) -> bytes: ...
def parse_insight(data: bytes) -> tuple[str, str, str] | SkipReason: ...
def count_files(roots: list[str], follow_symlinks: bool) -> int: ...
