"""A reader for the IDX files of MNIST and Fashion-MNIST, and the Fashion-MNIST loader.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package, which
installs the four gzip'd IDX files under ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch

from enlight_data.demo import ImageSet

__all__ = ["FASHION_MNIST_DIR", "INSTALL_HINT", "fashion_mnist_available", "load_fashion_mnist", "read_idx"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"

# IDX type codes: (torch dtype, big-endian struct code, bytes per element).
_IDX_TYPES: dict[int, tuple[torch.dtype, str, int]] = {
    0x08: (torch.uint8, "B", 1),
    0x09: (torch.int8, "b", 1),
    0x0B: (torch.int16, ">i2", 2),
    0x0C: (torch.int32, ">i4", 4),
    0x0D: (torch.float32, ">f4", 4),
    0x0E: (torch.float64, ">f8", 8),
}


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX file (plain or gzip'd, told apart by its first bytes) into a tensor.

    The format: two zero bytes, a type code, the number of dimensions, then one
    big-endian uint32 per dimension, then the values in big-endian C order.

    Args:
        path: The file.

    Returns:
        A tensor of the file's shape and type (``uint8`` for MNIST-style data).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a well-formed IDX file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file, expected the magic bytes 00 00, got {raw[:2].hex(' ') or 'nothing'}")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}, expected one of "
                         f"{', '.join(f'0x{c:02x}' for c in _IDX_TYPES)}")
    dtype, fmt, size = _IDX_TYPES[code]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header, expected {header} bytes, got {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = 1
    for d in shape:
        count *= d
    if len(raw) - header != count * size:
        raise ValueError(f"{path}: shape {tuple(shape)} needs {count * size} data bytes, got {len(raw) - header}")
    data = bytearray(raw[header:])  # writable, so torch.frombuffer does not warn
    if size == 1:
        flat = torch.frombuffer(data, dtype=dtype) if count else torch.empty(0, dtype=dtype)
    else:
        import numpy as np

        flat = torch.from_numpy(np.frombuffer(data, dtype=np.dtype(fmt)).astype(np.dtype(fmt).newbyteorder("=")))
    return flat.reshape(shape)


def _find(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def fashion_mnist_available(root: str | os.PathLike[str] = FASHION_MNIST_DIR) -> bool:
    """Whether the four Fashion-MNIST IDX files (gzip'd or plain) are under ``root``."""
    root = Path(root)
    return all(_find(root, f"{split}-{kind}") is not None
               for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def load_fashion_mnist(root: str | os.PathLike[str] = FASHION_MNIST_DIR) -> tuple[ImageSet, ImageSet]:
    """Fashion-MNIST's ``(train, test)`` sets as ``(N, 1, 28, 28)`` float32 images in [0, 1].

    Args:
        root: The folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Raises:
        FileNotFoundError: a file is missing; the message says how to install the data set.
    """
    root = Path(root)
    sets = []
    for split in ("train", "t10k"):
        images_path = _find(root, f"{split}-images-idx3-ubyte")
        labels_path = _find(root, f"{split}-labels-idx1-ubyte")
        if images_path is None or labels_path is None:
            raise FileNotFoundError(
                f"Fashion-MNIST not found in {root} (expected {split}-images-idx3-ubyte.gz and "
                f"{split}-labels-idx1-ubyte.gz); install Debian's package with: {INSTALL_HINT}"
            )
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{root}: expected (N, H, W) images and (N,) labels, got "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        sets.append(ImageSet(images.unsqueeze(1).float() / 255.0, labels.long()))
    return sets[0], sets[1]
