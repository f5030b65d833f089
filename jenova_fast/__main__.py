import sys

from jenova_fast.cli import main

sys.exit(main())
