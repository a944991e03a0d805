"""Error types: a BncheckError is the user's problem (exit 2, one plain line); anything else is a bug."""


class BncheckError(Exception):
    """A usage or input error. The CLI prints its message and exits with code 2."""


# How every user error starts on stderr.
ERROR_PREFIX = "bncheck: error: "
# Under bncheck's own launch (--nproc-per-node): the folder where each worker records its error
# sentence, as ERROR_FILE_PREFIX + its rank, for the launcher to read.
LAUNCH_DIR_ENV = "BNCHECK_LAUNCH_DIR"
ERROR_FILE_PREFIX = "error-"
