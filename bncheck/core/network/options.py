"""Option vocabularies shared by the CLI, the core and the backends."""

from enum import StrEnum


class OutputFormat(StrEnum):
    """How a report is written to stdout."""

    TEXT = "text"
    JSON = "json"


class Severity(StrEnum):
    """Severity of a finding, ordered info < warn < error."""

    INFO = "info"
    WARN = "warn"
    ERROR = "error"

    @property
    def rank(self) -> int:
        """Position in the order info < warn < error."""
        return ("info", "warn", "error").index(self.value)


class FailOn(StrEnum):
    """The lowest severity that makes the process exit 1; MISMATCH: only compare's mismatch verdict."""

    WARN = "warn"
    ERROR = "error"
    MISMATCH = "mismatch"


class RewriteMode(StrEnum):
    """A rewrite pass.

    REFERENCE and SPATIAL_REFERENCE are internal: the network as trained, its normalization layers
    on batch statistics, built without any rewrite so that they can check one. In
    SPATIAL_REFERENCE, layers with one value per channel per sample ((N, C) or 1x1 maps) stay on
    running stats, as batch-stats and instance-norm keep them; run one sample at a time, it is
    what instance-norm promises.
    """

    RECALIBRATE = "recalibrate"
    BATCH_STATS = "batch-stats"
    INSTANCE_NORM = "instance-norm"
    FOLD = "fold"
    REFERENCE = "reference"
    SPATIAL_REFERENCE = "spatial-reference"


USER_MODES = (
    RewriteMode.RECALIBRATE,
    RewriteMode.BATCH_STATS,
    RewriteMode.INSTANCE_NORM,
    RewriteMode.FOLD,
)


# Batch size for running models, unless --batch-size says otherwise.
DEFAULT_BATCH_SIZE = 16


class Device(StrEnum):
    """Where torch models run."""

    CPU = "cpu"
    CUDA = "cuda"
    AUTO = "auto"
