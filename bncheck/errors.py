"""Error types: a BncheckError is the user's problem (exit 2, one plain line); anything else is a bug."""


class BncheckError(Exception):
    """A usage or input error. The CLI prints its message and exits with code 2."""


class VerificationError(Exception):
    """A rewritten model failed its own verification. The CLI prints it and exits with code 1."""
