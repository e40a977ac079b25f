"""``python -m numbaconv``: the same as the ``numbaconv`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
