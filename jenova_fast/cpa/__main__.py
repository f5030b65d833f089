import sys

from jenova_fast.cpa.cli import main

sys.exit(main())
