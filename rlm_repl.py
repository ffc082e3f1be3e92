#!/usr/bin/env python3
"""rlm's command line; the commands live in rlmcore/cli.py (a module, so Python caches its bytecode)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rlmcore.cli import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
