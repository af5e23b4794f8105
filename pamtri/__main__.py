"""``python -m pamtri``: the command-line interface (same as the ``pamtri`` script)."""
import sys

from pamtri.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
