"""A dry run of a torch.save checkpoint's pickle, before torch reads it.

The dry run resolves every class to an inert stand-in, so it runs no code from the file. It
tells a damaged pickle from a sound one (torch's weights-only refusal looks the same for both),
and it lists each tensor storage with its element count, so a record that claims more bytes
than the file holds is refused before torch allocates it (a 4-byte record claiming 2^33
elements would ask for 64 GB) or memory-maps the bytes that follow it.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bytes per element, by the storage class name torch pickles.
_ITEMSIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16,
    "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4, "UntypedStorage": 1,
}


class _Stub:
    """Whatever a pickle builds: accepts every construction step and does nothing."""

    _name = "object"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        """APPEND on a stand-in list."""

    def extend(self, values: Any) -> None:
        """APPENDS on a stand-in list."""


@dataclass(frozen=True)
class StorageRecord:
    """One storage a checkpoint declares: its zip member key and its size in bytes."""

    key: str
    nbytes: int


class _DryRun(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: list[StorageRecord] = []

    def find_class(self, module: str, name: str) -> Any:
        return type(name, (_Stub,), {"_name": name})

    def persistent_load(self, pid: Any) -> Any:
        # torch: ("storage", storage_type, key, location, numel)
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage":
            storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
            item = _ITEMSIZE.get(getattr(storage_type, "_name", ""), 8)
            self.storages.append(StorageRecord(key, numel * item))
        return _Stub()


def check_zip_checkpoint(path: Path) -> str | None:
    """Why the zip checkpoint at ``path`` is damaged, or None when its records are sound."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            return "it has no single data.pkl record"
        root = pkl[0][: -len("data.pkl")]
        scan = _DryRun(z.read(pkl[0]))
        try:
            scan.load()
        except Exception as e:  # a damaged pickle fails in many ways
            return f"its pickle does not parse ({type(e).__name__})"
        sizes = {i.filename: i.file_size for i in z.infolist()}
    for s in scan.storages:
        have = sizes.get(f"{root}data/{s.key}")
        if have is None:
            return f"storage {s.key} is missing"
        if have < s.nbytes:
            return f"storage {s.key} holds {have} bytes but declares {s.nbytes}"
    return None


def first_pickle_parses(path: Path) -> bool:
    """Whether the pickle a legacy (non-zip) checkpoint starts with parses, run dry."""
    with path.open("rb") as f:
        try:
            _DryRun(f.read()).load()
        except Exception:  # a damaged pickle fails in many ways
            return False
    return True
