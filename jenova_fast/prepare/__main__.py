import sys

from jenova_fast.prepare.cli import main

sys.exit(main(prog="python -m jenova_fast.prepare"))
