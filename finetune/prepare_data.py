"""The command the assistant's README gives: `python finetune/prepare_data.py [options]`.

Same options as `jenova-fast prepare`; kept so existing instructions and scripts keep working.
"""

import sys

from jenova_fast.prepare.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="finetune/prepare_data.py"))
