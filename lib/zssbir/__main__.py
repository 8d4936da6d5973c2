"""`python -m zssbir ...`: the same as the `zssbir` command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
