import sys

from jenova_fast.finetune.cli import main

sys.exit(main())
