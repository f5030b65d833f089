"""`jenova-fast`: one console script, each subcommand a thin layer over its pipeline's own CLI."""

from __future__ import annotations

import importlib
import sys

from jenova_fast import __version__

# subcommand -> (module with `main(argv) -> int`, name of that function, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": ("jenova_fast.prepare.cli", "main", "turn an insight store into finetune/train.jsonl"),
    "demo": ("jenova_fast.demo", "main", "write a synthetic insight store and prepare it"),
    "cpa": ("jenova_fast.cpa.cli", "main", "Cognitive Process Accelerator: observe, stats, reset"),
    "finetune": ("jenova_fast.finetune.cli", "main", "fine-tune a GGUF model on train.jsonl with llama.cpp"),
    "engine": ("jenova_fast.engine.cli", "main", "build the patched llama.cpp that finetune trains with"),
    "install-model": ("jenova_fast.finetune.cli", "install_model_main", "install or roll back models/jenova.gguf"),
    "fleet": ("jenova_fast.fleet.cli", "main", "prepare, observe, fine-tune and install every user's model on Dask"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [
        "usage: jenova-fast [--version] <command> [options]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()),
        "",
        "`jenova-fast <command> --help` shows a command's options.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        print(f"jenova-fast {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command not in SUBCOMMANDS:
        print(f"jenova-fast: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = SUBCOMMANDS[command]
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


def entry() -> None:
    """The `jenova-fast` console script and `python -m jenova_fast`: main() under the one way every command
    ends on Ctrl-C or SIGTERM (`_signals`), installed before the subcommand's imports."""
    from jenova_fast._signals import run

    command = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS else None
    run(main, f"jenova-fast {command}" if command else "jenova-fast")


if __name__ == "__main__":
    entry()
