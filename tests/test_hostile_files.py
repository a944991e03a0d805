"""Every reader of a user's file, given a hostile file: one sentence naming the file, exit 2.

For each reader (numpy, PIL, onnx/protobuf, h5py, safetensors, zipfile, pickle, Keras,
TensorFlow) a valid file is damaged in each of five ways: truncated, a garbage header after its
magic, the wrong magic, empty, and a directory where the file should be. Whatever the parser
raises, bncheck must answer in one line that names the file; a traceback is a bug.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, MODELS, cli, model_path

Damage = Callable[[Path, Path], None]


def _truncated(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: max(1, len(data) // 2)])


def _garbage_header(src: Path, dst: Path) -> None:
    # The format's magic stays, so the file reaches its parser; what follows is noise.
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    end = min(len(data), 256)
    data[8:end] = rng.integers(0, 256, end - 8, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))


def _wrong_magic(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(b"\x00\xffBAD!" + data[6:])


def _empty(src: Path, dst: Path) -> None:
    dst.write_bytes(b"")


def _directory(src: Path, dst: Path) -> None:
    dst.mkdir()


DAMAGE: dict[str, Damage] = {"truncated": _truncated, "garbage-header": _garbage_header,
                             "wrong-magic": _wrong_magic, "empty": _empty,
                             "directory": _directory}


def _npy_token_error(dst: Path) -> None:
    # The header numpy's own parser chokes on (tokenize.TokenError), seen in the wild.
    body = b"{'descr': 'xx', 'shape': (("
    dst.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body)


# Model readers: (fixture file, the arguments after it).
MODEL_READERS: dict[str, Path] = {
    "onnx": model_path("digits", "onnx"),
    "pickle-checkpoint": model_path("digits", "checkpoint"),
    "safetensors": model_path("digits", "safetensors"),
    "pt2-zip": model_path("digits", "pt2"),
    "torchscript-zip": model_path("digits", "torchscript"),
    "keras-zip": MODELS / "keras_digits.keras",
    "keras-h5": MODELS / "keras_unet_bs1.h5",
    "tensorflow-pb": MODELS / "tf_pix2pix.pb",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("reader", sorted(MODEL_READERS))
def test_hostile_model_file_is_one_sentence(reader: str, damage: str, tmp_path: Path) -> None:
    src = MODEL_READERS[reader]
    dst = tmp_path / f"hostile{''.join(src.suffixes)}"
    DAMAGE[damage](src, dst)
    r = cli("inspect", dst)
    if damage == "garbage-header" and r.code != 2:
        # A zip archive is read from its central directory at the end: noise in its first
        # entry's header can leave every member intact, and then the file is simply read.
        assert r.code == 0 and "layers" in r.out, (r.out, r.err)
        return
    _refused(r, dst.name)


def test_hostile_saved_model_is_one_sentence(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    folder = tmp_path / "saved"
    shutil.copytree(MODELS / "tf_pix2pix_savedmodel", folder)
    _garbage_header(folder / "saved_model.pb", folder / "saved_model.pb")
    _refused(cli("inspect", folder), "saved")
    shutil.rmtree(folder / "variables")
    (folder / "variables").write_bytes(b"")
    _refused(cli("inspect", folder), "saved")


# Data readers: the flag, a valid source, and the model that reads it.
DATA_READERS: dict[str, tuple[str, Path]] = {
    "npy": ("--data", DATA / "digits_x.npy"),
    "npz": ("--data", DATA / "digits_x.npz"),
    "torch-tensor": ("--data", DATA / "digits_x.pt"),
    "labels-npy": ("--labels", DATA / "digits_y.npy"),
}


@pytest.fixture(scope="module")
def data_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """The data readers' valid sources, written once (the .npz and .pt forms of digits_x)."""
    folder = tmp_path_factory.mktemp("sources")
    x = np.load(DATA / "digits_x.npy")
    np.savez(folder / "digits_x.npz", x=x)
    import torch

    torch.save(torch.from_numpy(x), folder / "digits_x.pt")
    return {k: (flag, folder / src.name if src.parent == DATA and not src.exists() else src)
            for k, (flag, src) in DATA_READERS.items()}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("reader", sorted(DATA_READERS))
def test_hostile_data_file_is_one_sentence(reader: str, damage: str, tmp_path: Path,
                                           data_sources: dict[str, tuple[str, Path]]) -> None:
    flag, src = data_sources[reader]
    dst = tmp_path / f"hostile{src.suffix}"
    DAMAGE[damage](src, dst)
    args = ["--data", DATA / "digits_x.npy", flag, dst] if flag != "--data" else ["--data", dst]
    _refused(cli("compare", model_path("digits", "onnx"), *args), dst.name)


def test_npy_header_that_breaks_numpys_tokenizer(tmp_path: Path) -> None:
    dst = tmp_path / "x.npy"
    _npy_token_error(dst)
    _refused(cli("compare", model_path("digits", "onnx"), "--data", dst), "x.npy")


@pytest.mark.parametrize("damage", ["truncated", "garbage-header", "wrong-magic", "empty"])
def test_hostile_image_in_a_folder_is_one_sentence(damage: str, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    shutil.copytree(DATA / "digits_png", folder)
    first = sorted(folder.iterdir())[0]
    DAMAGE[damage](first, first)
    _refused(cli("compare", model_path("digits", "onnx"), "--data", folder), first.name)


def _refused(r, name: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == 2, (r.out, r.err)
    assert "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bncheck: error:"), r.err
    assert name in lines[0], lines[0]


def test_the_boundary_converts_a_parsers_error_and_keeps_bncheck_bugs() -> None:
    import json

    from bncheck.backends.onnxrt.hidden import listed
    from bncheck.errors import BncheckError, reading

    parse = pytest.raises(BncheckError, match=r"^--data x.json: cannot read it as JSON \(Expect")
    with parse, reading("x.json", "JSON", option="--data"):
        json.loads("{")  # raised inside the parser: the file's fault
    with pytest.raises(TypeError), reading("x.json", "JSON"):
        listed(None)  # type: ignore[arg-type]  # raised by bncheck's own code: a bug, kept
    with pytest.raises(BncheckError, match="Is a directory"), reading("/", "a file"):
        open("/", "rb")  # noqa: SIM115  # the file system's answer
