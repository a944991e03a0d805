"""Decide, before torch touches a ``.pt2`` archive, whether loading it could run code.

``torch.export.load`` unpickles parts of an archive with ``weights_only=False``: weights and tensor
constants marked ``use_pickle``, ``opaque_obj_*``/``custom_obj_*`` constants, legacy ``<model>.pt``
weight files, and the sample inputs whenever a weights-only load of them fails. It also loads compiled
AOTInductor libraries, and falls back to an older archive layout whose payloads are pickles.

So bncheck checks every member of the archive against the layout that a plain ``torch.export.save``
writes, and accepts only members that torch reads as raw bytes, JSON or text, plus sample inputs that
a weights-only unpickler (which runs no code) has already read. Anything else makes the archive
pickle-bearing, and it loads only with ``--allow-pickle``, as other pickles do.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch._C._export import pt2_archive_constants as pt2

# Members torch reads as plain text at the archive root.
_PLAIN_ROOT_FILES = {pt2.ARCHIVE_FORMAT_PATH, pt2.ARCHIVE_VERSION_PATH, "byteorder",
                     ".data/version", ".data/serialization_id"}


def pickle_reason(path: Path) -> str | None:
    """Why loading the ``.pt2`` at ``path`` could run code from it, or None when it cannot."""
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            # zipfile and torch's reader may pick different copies of a duplicated member.
            return "it has duplicate members, so what bncheck checks may not be what torch loads"
        root = names[0].split("/", 1)[0] if names else ""
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            head, sep, rest = info.filename.partition("/")
            if head != root or not sep:
                return f"member {info.filename!r} lies outside the archive's folder"
            if rest and not rest.endswith("/"):
                members[rest] = info
        if pt2.ARCHIVE_VERSION_PATH not in members:
            return "it uses the older torch.export layout, whose payloads are pickles"
        model_names = [n[len(pt2.MODELS_DIR):-len(".json")] for n in members
                       if n.startswith(pt2.MODELS_DIR) and n.endswith(".json")]
        expected = set(_PLAIN_ROOT_FILES)
        for model in model_names:
            reason = _model_reason(z, members, model, expected)
            if reason:
                return reason
        for name in members:
            if name in expected or name.startswith(pt2.EXTRA_DIR):
                continue  # extra/ files are read as strings only
            if name.startswith(pt2.AOTINDUCTOR_DIR):
                return "it holds compiled AOTInductor code"
            return f"member {name!r} is not part of a plain torch.export archive"
    return None


def _model_reason(z: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], model: str,
                  expected: set[str]) -> str | None:
    """Check one program's payloads; add the members it accounts for to ``expected``."""
    expected.add(pt2.MODELS_FILENAME_FORMAT.format(model))
    for legacy in (f"{pt2.WEIGHTS_DIR}{model}.pt", f"{pt2.CONSTANTS_DIR}{model}.pt"):
        if legacy in members:
            return f"{legacy} is a legacy pickled payload"
    for config_name, directory, prefix in (
        (pt2.WEIGHTS_CONFIG_FILENAME_FORMAT, pt2.WEIGHTS_DIR, pt2.WEIGHT_FILENAME_PREFIX),
        (pt2.CONSTANTS_CONFIG_FILENAME_FORMAT, pt2.CONSTANTS_DIR, pt2.TENSOR_CONSTANT_FILENAME_PREFIX),
    ):
        config_file = config_name.format(model)
        if config_file not in members:
            continue  # torch then fails to load it, before unpickling anything
        expected.add(config_file)
        config = _json(z, members[config_file])
        entries = config.get("config") if isinstance(config, dict) else None
        if not isinstance(entries, dict):
            return f"{config_file} is not a payload table"
        for fqn, meta in entries.items():
            if not isinstance(meta, dict) or meta.get("use_pickle"):
                return f"{fqn!r} in {config_file} is stored as a pickle"
            path_name = meta.get("path_name")
            if not isinstance(path_name, str) or not path_name.startswith(prefix):
                return f"{fqn!r} in {config_file} is a pickled object ({path_name!r})"
            expected.add(directory + path_name)
    inputs = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
    if inputs in members:
        expected.add(inputs)
        if not _weights_only_readable(z.read(members[inputs])):
            return f"{inputs} holds pickled objects beyond tensors"
    return None


def _json(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    try:
        return json.loads(z.read(info))
    except (ValueError, UnicodeDecodeError):
        return None


def _weights_only_readable(data: bytes) -> bool:
    """torch tries a weights-only load of sample inputs first; only its failure unpickles freely."""
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # any failure at all sends torch to its unpickling fallback
        return False
    return True
