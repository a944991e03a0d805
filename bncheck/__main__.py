"""Allow ``python -m bncheck``."""

from bncheck.cli.app import main

main()
