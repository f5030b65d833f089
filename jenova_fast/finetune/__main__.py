from jenova_fast._signals import run


def _main() -> int:  # imported under run(): a Ctrl-C from here on is one line, not a traceback
    from jenova_fast.finetune.cli import main

    return main()


run(_main, "python -m jenova_fast.finetune")
