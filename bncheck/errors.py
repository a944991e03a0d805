"""Error types: a BncheckError is the user's problem (exit 2, one plain line); anything else is a bug."""


class BncheckError(Exception):
    """A usage or input error. The CLI prints its message and exits with code 2."""
