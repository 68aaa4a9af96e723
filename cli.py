"""Thin front for running the CLI from a checkout: ``python cli.py --help``.

The installed command is ``recall`` (entry point ``recall.cli:main``); this file
is not installed as a module, so it cannot clash with other packages' ``cli``.
"""

from recall.cli import main

if __name__ == "__main__":
    main()
