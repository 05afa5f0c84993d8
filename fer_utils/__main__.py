"""`python -m fer_utils ...`: the kit's command line (`fer_utils.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
