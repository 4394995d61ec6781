"""`python -m classifier ...`: the command line lives in `classifier.cli`."""

import sys

from classifier.cli import main

if __name__ == "__main__":
    sys.exit(main())
