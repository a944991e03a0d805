"""Reading PyTorch files: checkpoints (weights_only), safetensors, TorchScript, .pt2, --arch."""

from __future__ import annotations

import logging
import pickle
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bncheck.backends.pytorch.scan import check_zip_checkpoint, first_pickle_parses
from bncheck.core.inputs.imports import call_factory, cwd_importable
from bncheck.core.network.formats import ModelFormat
from bncheck.errors import BncheckError, reading, reason

# What reading a damaged file ends with, after the parser's own reason.
DAMAGED = "the file is probably truncated or damaged: save or copy it again"
# Keys under which training scripts nest the weights, most specific first.
_NEST_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module",
              "model_ema", "ema", "weights", "params", "generator", "netG")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Checkpoint:
    """A state_dict and where it sat in the file, so it can be written back the same way."""

    state_dict: dict[str, torch.Tensor]
    container: Any = None
    key_path: tuple[str, ...] = ()
    prefix: str = ""

    def rebuilt(self, new_state: Mapping[str, torch.Tensor]) -> Any:
        """The original container with the state_dict values replaced by ``new_state``."""
        sd = with_metadata({self.prefix + k: new_state.get(k, v)
                            for k, v in self.state_dict.items()}, self.state_dict, "", self.prefix)
        if not self.key_path:
            return sd
        return _replace_at(self.container, self.key_path, sd)


def with_metadata(sd: dict[str, torch.Tensor], source: Mapping[str, torch.Tensor], strip: str,
                  add: str) -> dict[str, torch.Tensor]:
    """``sd`` carrying ``source``'s ``_metadata`` (each module's state_dict version, which
    ``load_state_dict`` hands to modules such as torchvision's MNASNet, that refuse to load
    without it), its module names with ``strip`` removed and ``add`` put in front."""
    meta = getattr(source, "_metadata", None)
    if meta is None:
        return sd
    out = OrderedDict(sd)
    names: OrderedDict[str, Any] = OrderedDict()
    for name, value in meta.items():
        dotted = name + "." if name else ""
        if dotted.startswith(strip):
            names[(add + dotted[len(strip):]).rstrip(".")] = value
    out._metadata = names  # type: ignore[attr-defined]
    return out


def _replace_at(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    copy = dict(obj)
    copy[path[0]] = value if len(path) == 1 else _replace_at(obj[path[0]], path[1:], value)
    return copy


@dataclass
class Loaded:
    """What a torch file held: a runnable module, a checkpoint, or both (state_dict + --arch)."""

    module: nn.Module | None
    checkpoint: Checkpoint | None
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    batch_limit: int | None = None  # a .pt2's upper bound on the batch dimension


# An expanded view in a checkpoint is refused when reading it would allocate more than this.
MAX_VIEW_BYTES = 1 << 30


def load_file(path: Path, fmt: ModelFormat, *, allow_pickle: bool) -> Loaded:
    """Read ``path``; never runs pickled code unless ``allow_pickle``."""
    if fmt is ModelFormat.SAFETENSORS:
        return Loaded(None, Checkpoint(_load_safetensors(path)))
    if fmt is ModelFormat.TORCHSCRIPT:
        with reading(path, "TorchScript", advice=DAMAGED), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript still loads
            return Loaded(torch.jit.load(str(path), map_location="cpu"), None)
    if fmt is ModelFormat.EXPORTED_PROGRAM:
        from bncheck.backends.pytorch.exported import (
            batch_limit,
            example_shapes,
            module_from_exported,
        )
        from bncheck.backends.pytorch.pt2_safety import pickle_reason

        with reading(path, "a torch.export archive", advice=DAMAGED):
            risk = None if allow_pickle else pickle_reason(path)
        if risk:
            raise BncheckError(f"{path} may run code when loaded: {risk}. If you trust it, "
                               "re-run with --allow-pickle")
        with reading(path, "a torch.export archive", advice=DAMAGED), \
                warnings.catch_warnings(), _quiet_torch_loggers():
            warnings.simplefilter("ignore")
            ep = torch.export.load(str(path))
        return Loaded(module_from_exported(ep), None, example_shapes(ep), batch_limit(ep))
    return _from_object(path, _torch_load(path, allow_pickle))


@contextmanager
def _quiet_torch_loggers() -> Iterator[None]:
    """torch.export logs whole tracebacks for damaged archives; bncheck reports one line instead."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch._utils_internal")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file as st_load

    with reading(path, "safetensors", advice=DAMAGED):
        return dict(st_load(str(path)))


def _torch_load(path: Path, allow_pickle: bool) -> Any:
    # Zip checkpoints are checked first (a dry run of their pickle, storage sizes against the
    # file), then memory-mapped: big checkpoints cost no copy. Legacy ones cannot be mapped.
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        with reading(path, "a torch checkpoint", advice=DAMAGED):
            damage = check_zip_checkpoint(path)
        if damage:
            raise BncheckError(f"{path} is damaged: {damage}; save or copy it again")
    try:
        with reading(path, "a torch checkpoint", advice=DAMAGED,
                     passthrough=(pickle.UnpicklingError,)):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        # A sound pickle (the dry run parses it) refused by the weights-only loader holds
        # Python objects beyond tensors.
        if not is_zip and not first_pickle_parses(path):
            raise BncheckError(f"{path}: cannot read it as a torch checkpoint ({reason(e)}); "
                               f"{DAMAGED}") from e
        if not allow_pickle:
            raise BncheckError(
                f"{path} holds pickled Python objects (a fully pickled model); loading it would run "
                "code from the file. If you trust it, re-run with --allow-pickle"
            ) from e
    try:
        with warnings.catch_warnings(), cwd_importable():
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # arbitrary: the pickle may reference missing classes
        raise BncheckError(f"{path}: unpickling failed ({type(e).__name__}: {e}); the classes it "
                           "needs must be importable from the current directory") from e


def _from_object(path: Path, obj: Any) -> Loaded:
    if isinstance(obj, nn.Module):
        _check_views(path, obj.state_dict())
        return Loaded(obj, None)
    if isinstance(obj, Mapping):
        for key in _NEST_KEYS:
            if isinstance(obj.get(key), nn.Module):
                _check_views(path, obj[key].state_dict())
                return Loaded(obj[key], None)
        found = _find_state_dict(obj, ())
        if found is not None:
            sd, key_path = found
            _check_views(path, sd)
            stripped, prefix = _strip_prefix(sd)
            return Loaded(None, Checkpoint(stripped, obj, key_path, prefix))
    raise BncheckError(f"{path} holds a {type(obj).__name__}, not a model or a state_dict")


def _check_views(path: Path, sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse a tensor whose shape claims more elements than its storage holds (an expanded
    view) when making it real would take more than ``MAX_VIEW_BYTES``: the storage check passes
    it, since its few stored bytes are all there, but reading it as float64 would allocate the
    whole claimed size."""
    for key, t in sd.items():
        if t.layout is not torch.strided:
            continue  # sparse and other layouts have no one storage; refused later, by kind
        stored = t.untyped_storage().nbytes() // max(t.element_size(), 1)
        if t.numel() > stored and t.numel() * 8 > MAX_VIEW_BYTES:
            raise BncheckError(
                f"{path}: tensor {key!r} claims {t.numel()} elements (shape {tuple(t.shape)}) "
                f"over a storage of {stored}, an expanded view that would take "
                f"{t.numel() * 8 / 2**30:.0f} GiB to read; the file is not a usable checkpoint")


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) for k in obj)
            and all(isinstance(v, torch.Tensor) for v in obj.values()))


def _find_state_dict(obj: Mapping[str, Any], path: tuple[str, ...]
                     ) -> tuple[dict[str, torch.Tensor], tuple[str, ...]] | None:
    if _is_state_dict(obj):
        return with_metadata(dict(obj), obj, "", ""), path
    if len(path) >= 3:
        return None
    keys = [k for k in _NEST_KEYS if k in obj] + [k for k in obj if k not in _NEST_KEYS]
    for k in keys:
        v = obj[k]
        if isinstance(v, Mapping):
            found = _find_state_dict(v, (*path, k))
            if found is not None:
                return found
    return None


def _strip_prefix(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    prefix = ""
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(prefix + p) for k in sd):
                prefix += p
                changed = True
    n = len(prefix)
    return with_metadata({k[n:]: v for k, v in sd.items()}, sd, prefix, ""), prefix


def build_arch(spec: str, state_dict: Mapping[str, torch.Tensor], path: Path) -> nn.Module:
    """Build ``package.module:factory`` (cwd importable) and load the weights strictly."""
    model = call_factory(spec, "--arch")
    if not isinstance(model, nn.Module):
        raise BncheckError(f"--arch {spec}: the factory returned {type(model).__name__}, "
                           "not an nn.Module")
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        raise BncheckError(f"--arch {spec} does not match the weights in {path}: "
                           f"{str(e).splitlines()[-1].strip()}") from e
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {len(result.missing_keys)} key(s), e.g. "
                         f"{', '.join(result.missing_keys[:3])}")
        if result.unexpected_keys:
            parts.append(f"unexpected {len(result.unexpected_keys)} key(s), e.g. "
                         f"{', '.join(result.unexpected_keys[:3])}")
        raise BncheckError(f"--arch {spec} does not match the weights in {path}: "
                           f"{'; '.join(parts)}")
    return model.eval()
