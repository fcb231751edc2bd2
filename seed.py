"""Example data through the model API (server/seed.py): `python seed.py [--config PATH]`; safe to rerun."""

import sys

from server.__main__ import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "seed"]))
