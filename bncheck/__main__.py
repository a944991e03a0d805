"""Allow ``python -m bncheck``."""

from bncheck.cli.entry import main

main()
