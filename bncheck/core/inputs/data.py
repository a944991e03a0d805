"""Sample data: .npy, .npz, torch.save'd tensors and image folders, read a batch at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from bncheck.core.inputs.paths import exists, shown
from bncheck.errors import BncheckError, reading

# Suffixes of tensors saved with torch.save, read by the torch backend (core never imports it).
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
TensorReader = Callable[[Path], list[np.ndarray]]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
_NAN_SCAN_CHUNK = 256


@dataclass(frozen=True)
class ImageOptions:
    """How to turn image files into tensors."""

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


class SampleSource(Protocol):
    """Random access to samples; ``load`` returns one array per model input."""

    def __len__(self) -> int: ...

    def load(self, index: np.ndarray) -> list[np.ndarray]: ...


class ArraySource:
    """Arrays (memory-mapped where the format allows), one per model input, samples on axis 0."""

    def __init__(self, arrays: list[np.ndarray], origin: str) -> None:
        for a in arrays:
            if a.ndim == 0:
                raise BncheckError(f"{origin}: a single number (0-d array) is not a batch of "
                                   "samples")
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or \
                    np.issubdtype(a.dtype, np.complexfloating):
                raise BncheckError(f"{origin}: holds {a.dtype} values; model inputs are real "
                                   "numbers")
        n = {a.shape[0] for a in arrays}
        if len(n) != 1:
            raise BncheckError(f"{origin}: the arrays have different sample counts {sorted(n)}")
        self.arrays = arrays

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def load(self, index: np.ndarray) -> list[np.ndarray]:
        """Samples at ``index`` as float32 (or integer) arrays."""
        return [_as_input(a[np.sort(index)][np.argsort(np.argsort(index))]) for a in self.arrays]


def _as_input(a: np.ndarray) -> np.ndarray:
    return a if np.issubdtype(a.dtype, np.integer) else a.astype(np.float32, copy=False)


class ImageSource:
    """An image folder; each ``load`` opens only the requested files."""

    def __init__(self, files: list[Path], channels: int, size: tuple[int, int] | None,
                 opts: ImageOptions, channels_last: bool = False) -> None:
        self.files = files
        self.channels = channels
        self.channels_last = channels_last
        self.size = size
        self.mean = np.array(opts.mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.array(opts.std, dtype=np.float32).reshape(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: np.ndarray) -> list[np.ndarray]:
        """Read, resize, scale to [0, 1], then normalize with mean/std."""
        from PIL import Image

        out = []
        for i in index:
            f = self.files[int(i)]
            with reading(f, "an image"), Image.open(f) as raw:
                im = raw.convert("L" if self.channels == 1 else "RGB")
                if self.size is not None and im.size != (self.size[1], self.size[0]):
                    im = im.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            out.append((arr - self.mean) / self.std)
        shapes = {a.shape for a in out}
        if len(shapes) > 1:
            raise BncheckError(f"images in {self.files[0].parent} have different sizes "
                               f"{sorted(shapes)}; pass --image-size H,W")
        batch = np.stack(out).astype(np.float32)
        return [np.ascontiguousarray(batch.transpose(0, 2, 3, 1)) if self.channels_last else batch]


def open_samples(path: Path, *, input_names: Sequence[str], input_shapes: Sequence[
        tuple[int | None, ...]], image: ImageOptions, limit: int | None,
                 check_shapes: bool = True, read_torch: TensorReader | None = None,
                 channels_last: bool = False) -> SampleSource:
    """Open ``path`` as a sample source and check it before any model work starts.

    ``read_torch`` reads torch.save'd tensors; the caller passes the torch backend's reader.
    With ``channels_last`` the model takes (N, H, W, C) images, and an image folder is fed so.
    """
    if not exists(path, "--data"):
        raise BncheckError(f"--data {shown(path)}: no such file or folder")
    if path.is_dir():
        src: SampleSource = _image_folder(path, input_shapes, image, channels_last)
    else:
        arrays = ArraySource(_arrays(path, input_names, read_torch), f"--data {path}")
        # Only the samples --limit keeps are ever read; only they need scanning.
        _check_finite(arrays, path, len(arrays) if limit is None else min(limit, len(arrays)))
        src = arrays
    if len(src) == 0:
        raise BncheckError(f"--data {path}: holds no samples")
    if limit is not None:
        src = Limited(src, limit)
    if check_shapes:
        _check_shapes(src, path, input_shapes, channels_last)
    return src


class Limited:
    """The first ``limit`` samples of another source."""

    def __init__(self, inner: SampleSource, limit: int) -> None:
        self.inner = inner
        self.n = min(limit, len(inner))

    def __len__(self) -> int:
        return self.n

    def load(self, index: np.ndarray) -> list[np.ndarray]:
        """Delegate to the wrapped source."""
        return self.inner.load(index)


def _arrays(path: Path, input_names: Sequence[str], read_torch: TensorReader | None
            ) -> list[np.ndarray]:
    suffix = path.suffix.lower()
    with reading(path, suffix, option="--data"):
        if suffix == ".npy":
            return [np.load(path, mmap_mode="r", allow_pickle=False)]
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    if suffix == ".npz":
        return _select_npz(arrays, input_names, path)
    if suffix in TORCH_SUFFIXES:
        if read_torch is None:
            raise BncheckError(f"--data {path}: reading torch.save'd tensors needs torch; "
                               "install bncheck[torch] or give .npy")
        return read_torch(path)
    raise BncheckError(f"--data {path}: use .npy, .npz, a torch.save'd tensor (.pt) or a folder "
                       "of images")


def _select_npz(arrays: dict[str, np.ndarray], input_names: Sequence[str],
                path: Path) -> list[np.ndarray]:
    if len(arrays) == 1:
        return list(arrays.values())
    if input_names and all(n in arrays for n in input_names):
        return [arrays[n] for n in input_names]
    if len(input_names) <= 1:
        raise BncheckError(f"--data {path} holds {len(arrays)} arrays ({', '.join(arrays)}); the "
                           "model takes one input: keep one array or name it after the input")
    raise BncheckError(f"--data {path}: expected arrays named {', '.join(input_names)}; found "
                       f"{', '.join(arrays)}")


def _image_folder(path: Path, shapes: Sequence[tuple[int | None, ...]],
                  opts: ImageOptions, channels_last: bool) -> ImageSource:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BncheckError(f"--data {path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(shapes) > 1:
        raise BncheckError(f"--data {path}: an image folder feeds one input; this model has "
                           f"{len(shapes)}")
    shape = shapes[0] if shapes else (None, None, None, None)
    if channels_last and len(shape) == 4:
        shape = (shape[0], shape[3], shape[1], shape[2])  # read as (N, C, H, W), fed as NHWC
    channels = shape[1] if len(shape) == 4 and shape[1] else 3
    size = opts.size
    if size is None and len(shape) == 4 and shape[2] and shape[3]:
        size = (int(shape[2]), int(shape[3]))
    if size is None:
        size = _image_size(files[0])
    for option, values in (("--mean", opts.mean), ("--std", opts.std)):
        if len(values) not in (1, channels):
            raise BncheckError(f"{option} has {len(values)} values; the model's input has "
                               f"{channels} channel(s): give 1 value"
                               + ("" if channels == 1 else f" or {channels}"))
    return ImageSource(files, int(channels), size, opts, channels_last)


def _image_size(f: Path) -> tuple[int, int]:
    """(height, width) of an image file."""
    from PIL import Image

    with reading(f, "an image"), Image.open(f) as im:
        return im.size[1], im.size[0]


def _check_finite(src: ArraySource, path: Path, n: int) -> None:
    for k, a in enumerate(src.arrays):
        if np.issubdtype(a.dtype, np.integer):
            continue
        bad, first = 0, None
        for start in range(0, n, _NAN_SCAN_CHUNK):
            block = np.asarray(a[start:min(n, start + _NAN_SCAN_CHUNK)])
            mask = ~np.isfinite(block)
            if mask.any():
                bad += int(mask.sum())
                if first is None:
                    first = start + int(np.argwhere(mask)[0][0])
        if bad:
            which = f" (array {k})" if len(src.arrays) > 1 else ""
            raise BncheckError(f"--data {path}{which}: {bad} NaN/Inf value(s), the first in sample "
                               f"{first}; clean the data first")


def _check_shapes(src: SampleSource, path: Path,
                  shapes: Sequence[tuple[int | None, ...]], channels_last: bool = False) -> None:
    sample = src.load(np.arange(1))
    if shapes and len(sample) != len(shapes):
        raise BncheckError(f"--data {path}: gives {len(sample)} input(s); the model takes "
                           f"{len(shapes)}")
    for got, want in zip(sample, shapes, strict=False):
        if _fits(got.shape, want):
            continue
        exp = "(N, " + ", ".join("?" if w is None else str(w) for w in want[1:]) + ")"
        layout = ""
        if len(want) >= 3:
            other = _other_layout(got.shape, channels_last)
            if _fits(other, want):
                layout = (" (channels-last, as Keras takes images: transpose the data to "
                          "(N, H, W, C))" if channels_last else
                          " (channels-first: transpose the data to (N, C, H, W))")
        raise BncheckError(f"--data {path}: samples have shape (N, "
                           f"{', '.join(map(str, got.shape[1:]))}); the model expects {exp}{layout}")


def _fits(got: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    return len(got) == len(want) and all(
        w is None or w == g for g, w in zip(got[1:], want[1:], strict=True))


def _other_layout(shape: tuple[int, ...], channels_last: bool) -> tuple[int, ...]:
    """``shape`` read in the other layout: channels-first data for a channels-last model."""
    if channels_last:
        return (shape[0], *shape[2:], shape[1])
    return (shape[0], shape[-1], *shape[1:-1])
