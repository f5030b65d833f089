from jenova_fast._signals import run


def _main() -> int:  # imported under run(): a Ctrl-C from here on is one line, not a traceback
    from jenova_fast.prepare.cli import main

    return main(prog="python -m jenova_fast.prepare")


run(_main, "python -m jenova_fast.prepare")
