"""A .pt2 archive that would unpickle anything is refused without --allow-pickle, before torch reads it.

Each crafted archive is first shown to run its payload under a plain ``torch.export.load``, so the
refusal tests below cannot pass by accident.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, model_path

Members = dict[str, bytes]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _rewrite(src: Path, dst: Path, edit: Callable[[str, Members], None]) -> None:
    with zipfile.ZipFile(src) as z:
        root = z.namelist()[0].split("/", 1)[0]
        members = {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}
    edit(root, members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(f"{root}/{name}", data)


def _sample_inputs(marker: Path) -> Callable[[str, Members], None]:
    def edit(_root: str, m: Members) -> None:
        m["data/sample_inputs/model.pt"] = pickle.dumps(_Evil(marker))
    return edit


def _pickled_weight(marker: Path) -> Callable[[str, Members], None]:
    def edit(_root: str, m: Members) -> None:
        import io

        import torch

        cfg = json.loads(m["data/weights/model_weights_config.json"])
        first = next(iter(cfg["config"].values()))
        first["use_pickle"] = True
        buf = io.BytesIO()
        torch.save(_Evil(marker), buf)
        m["data/weights/" + first["path_name"]] = buf.getvalue()
        m["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
    return edit


def _opaque_constant(marker: Path) -> Callable[[str, Members], None]:
    def edit(_root: str, m: Members) -> None:
        cfg = json.loads(m["data/constants/model_constants_config.json"])
        cfg["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                 "tensor_meta": None}
        m["data/constants/model_constants_config.json"] = json.dumps(cfg).encode()
        m["data/constants/opaque_obj_0"] = pickle.dumps(_Evil(marker))
    return edit


CRAFTS = {"sample_inputs": _sample_inputs, "use_pickle_weight": _pickled_weight,
          "opaque_obj": _opaque_constant}


def _craft(tmp_path: Path, how: str) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    archive = tmp_path / f"evil_{how}.pt2"
    _rewrite(model_path("digits", "pt2"), archive, CRAFTS[how](marker))
    return archive, marker


def _bncheck(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # A subprocess, so that torch's own loggers would show exactly as a user sees them.
    return subprocess.run([sys.executable, "-m", "bncheck", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("how", sorted(CRAFTS))
def test_crafted_archive_really_runs_code_under_plain_torch(tmp_path: Path, how: str) -> None:
    archive, marker = _craft(tmp_path, how)
    code = f"import torch\ntry:\n    torch.export.load({str(archive)!r})\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert marker.exists(), "the crafted archive no longer exercises torch's unpickling path"


@pytest.mark.parametrize("command", ["inspect", "compare"])
@pytest.mark.parametrize("how", sorted(CRAFTS))
def test_crafted_archive_is_refused_and_runs_nothing(tmp_path: Path, how: str, command: str) -> None:
    archive, marker = _craft(tmp_path, how)
    before = archive.read_bytes()
    extra = ["--data", str(ROOT / "fixtures/data/digits_x.npy")] if command == "compare" else []
    r = _bncheck(command, archive, *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--allow-pickle" in lines[0] and archive.name in lines[0], r.stderr
    assert not marker.exists()
    assert archive.read_bytes() == before


def test_plain_archive_loads_without_allow_pickle() -> None:
    r = _bncheck("inspect", model_path("digits", "pt2"), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["layers"]) == 3


@pytest.mark.parametrize("member", ["data/aotinductor/model/model.so", "data/weights/model.pt"])
def test_code_or_legacy_pickle_members_are_refused(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "extra_member.pt2"

    def edit(_root: str, m: Members) -> None:
        m[member] = b"\x7fELF"

    _rewrite(model_path("digits", "pt2"), archive, edit)
    r = _bncheck("inspect", archive)
    assert r.returncode == 2 and "--allow-pickle" in r.stderr, r.stderr


def test_damaged_archive_is_one_line_without_torch_logging(tmp_path: Path) -> None:
    archive = tmp_path / "damaged.pt2"

    def edit(_root: str, m: Members) -> None:
        m["models/model.json"] = m["models/model.json"][:100]

    _rewrite(model_path("digits", "pt2"), archive, edit)
    r = _bncheck("inspect", archive)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
