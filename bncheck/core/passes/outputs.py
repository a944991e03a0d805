"""Per-sample model outputs parked on disk, so memory does not grow with the sample count."""

from __future__ import annotations

import tempfile
import weakref

import numpy as np


class OutputStore:
    """Rows of float32 written and read by sample index in a temporary file."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.width = 0
        # Closed in close(); a with-block cannot span the passes that write and read it. A store
        # abandoned by an exception mid-compare is closed when it is collected.
        self._file = tempfile.TemporaryFile()  # noqa: SIM115
        weakref.finalize(self, self._file.close)

    def write(self, index: np.ndarray, rows: np.ndarray) -> None:
        """Store ``rows`` (len(index), D) at ``index``."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if self.width == 0:
            self.width = rows.shape[1]
            self._file.truncate(self.n * self.width * 4)
        for i, row in zip(index.tolist(), rows, strict=True):
            self._file.seek(i * self.width * 4)
            self._file.write(row.tobytes())

    def read(self, index: np.ndarray) -> np.ndarray:
        """Rows at ``index``."""
        out = np.empty((index.size, self.width), dtype=np.float32)
        for k, i in enumerate(index.tolist()):
            self._file.seek(i * self.width * 4)
            out[k] = np.frombuffer(self._file.read(self.width * 4), dtype=np.float32)
        return out

    def close(self) -> None:
        """Delete the file."""
        self._file.close()
