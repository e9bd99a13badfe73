"""The shard format: writing a dataset as webdataset tar shards, and reading shard catalogues.

:func:`write_shards` turns any map-style ``(input, label)`` dataset into webdataset tar shards plus an index JSON.
Every sample's ``__key__`` is its global integer id, zero-padded, so a stream of the shards can record losses and
exclude samples by id. :func:`load_catalog` reads what :func:`enlight_data.stream` needs to plan an epoch (the shard
URLs, each shard's sample ids) from an index, or by scanning the tar headers of foreign shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import re
import tarfile
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from . import _codec
from ._validate import check_bool, check_choice, check_int

__all__ = [
    "HANDLERS",
    "INDEX_FORMAT",
    "KEY_SPACE",
    "ShardCatalog",
    "ShardError",
    "close_stream",
    "hash_id",
    "load_catalog",
    "local_path",
    "member_key",
    "shard_names",
    "write_shards",
]

# What a corrupt shard or sample does: "raise" a ShardError, or "warn" and skip it (counted).
HANDLERS = ("raise", "warn")

INDEX_FORMAT = "enlight_data.shards"
INDEX_VERSION = 1
_KEY_WIDTH = 9
_HASH_FACTOR = 16  # integer keys are the ids when they fall in [0, 16 * samples)
KEY_SPACE = 2**63  # the hashes that check a key at its position (ShardCatalog.key_hashes): any int64 >= 0
_IMAGE_FORMATS = ("jpg", "png", "npy")
_JPEG_MAX_SIDE = 65500  # libjpeg-turbo's JPEG_MAX_DIMENSION
# Index JSON keys.
_FORMAT, _VERSION, _TOTAL, _NUM_CLASSES, _SHARDS = "format", "version", "total", "num_classes", "shards"
_URL, _COUNT, _OFFSET = "url", "count", "offset"


class ShardError(RuntimeError):
    """Reading or decoding a shard failed; the message names the shard and, where known, the sample key."""


# ---------------------------------------------------------------------------------------------------- writing


def _to_uint8_image(x: Any, index: int, image_format: str) -> Tensor | None:
    """``x`` as a uint8 ``(C, H, W)`` tensor if it is an image to store as jpg/png, else None."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with torchvision
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(x, Image.Image):
        # NOTE [ PIL modes ]
        # jpg and png hold 8-bit grayscale or RGB here. "1" (bilevel) and "P" (palette) images without
        # transparency convert to those exactly; any other mode (I;16, I, F, RGBA, LA, CMYK, ...) would lose values
        # or channels, so image_format="npy" stores its pixels unchanged and jpg/png refuse it.
        if x.mode == "1":
            x = x.convert("L")
        elif x.mode == "P" and "transparency" not in x.info:
            x = x.convert("RGB")
        if x.mode not in ("L", "RGB"):
            if image_format == "npy":
                return None
            raise ValueError(
                f"PIL images should have mode 'L' or 'RGB' to be stored as {image_format} (other modes lose values "
                f"or channels), got mode={x.mode!r} at dataset[{index}]; pass image_format='npy' to store the pixels "
                "unchanged, or convert the image first"
            )
        arr = np.asarray(x)
        t = torch.from_numpy(arr.copy())
        return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()
    if image_format == "npy":
        return None
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(
                f"inputs should be arrays of numbers, got dataset[{index}][0], a numpy array of dtype object"
            )
        x = torch.from_numpy(np.ascontiguousarray(x))  # a flipped view (negative strides) too
    if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[0] not in (1, 3) or min(x.shape[1:]) < 1:
        return None
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point():
        return None
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"float images should have finite values to be stored as {image_format}, got {bad} NaN or infinite "
            f"values at dataset[{index}]"
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float images should have values in [0, 1] to be stored as {image_format}, got values in "
            f"[{lo:g}, {hi:g}] at dataset[{index}]; pass image_format='npy' to store tensors unchanged"
        )
    return (x * 255.0).round_().to(torch.uint8).contiguous()


def _channels_last(x: Any) -> bool:
    """Whether ``x`` looks like an ``(H, W, C)`` image (C = 1 or 3) rather than a ``(C, H, W)`` one."""
    shape: tuple[int, ...] = tuple(getattr(x, "shape", ()))
    return len(shape) == 3 and shape[2] in (1, 3) and shape[0] not in (1, 3)


def _encode_input(x: Any, index: int, image_format: str, quality: int) -> tuple[str, bytes]:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with torchvision
        Image = None  # type: ignore[assignment]

    image = _to_uint8_image(x, index, image_format)
    if image is not None:
        fmt = "jpg" if image_format == "jpg" else "png"  # npy only reaches here for PIL images, stored as png
        if fmt == "jpg" and max(image.shape[1:]) > _JPEG_MAX_SIDE:  # libjpeg would crash the process
            raise ValueError(
                f"images should be at most {_JPEG_MAX_SIDE} pixels on a side to be stored as jpg, got an image of "
                f"shape {tuple(image.shape)} at dataset[{index}]; pass image_format='png' or 'npy'"
            )
        return fmt, _codec.encode(image, image_format=fmt, quality=quality)
    if Image is not None and isinstance(x, Image.Image):  # a mode jpg/png cannot hold: its pixels, as (C, H, W)
        arr = np.asarray(x)
        x = arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, (numbers.Number, np.generic)):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"inputs should be tensors, numpy arrays, numbers or PIL images, got dataset[{index}][0] of type "
            f"{type(x).__name__}"
        )
    if x.dtype == object:
        raise TypeError(f"inputs should be arrays of numbers, got dataset[{index}][0], a numpy array of dtype object")
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return "npy", buf.getvalue()


def _label(y: Any, index: int) -> int:
    if isinstance(y, Tensor) and y.numel() == 1 and not y.is_floating_point() and y.dtype != torch.bool:
        label = int(y)
    elif isinstance(y, (numbers.Integral, np.integer)) and not isinstance(y, (bool, np.bool_)):
        label = int(y)
    else:
        raise TypeError(f"labels should be integers, got dataset[{index}][1]={y!r} of type {type(y).__name__}")
    if label < 0:
        raise ValueError(f"labels should be class indices >= 0, got dataset[{index}][1]={label}")
    return label


def _index_path(pattern: str) -> str:
    """``<folder>/<prefix>index.json`` for a shard pattern whose ``%``-format is in the file name.

    The prefix is the file name up to its first ``%`` that starts a format (not one of a ``%%``
    escape), unescaped: ``a%%b-%03d.tar`` gives ``a%b-index.json``.
    """
    name = os.path.basename(pattern)
    end = 0
    while end < len(name):
        if name[end] == "%":
            if name[end + 1 : end + 2] != "%":
                break  # the shard number's format starts here
            end += 2  # a literal %, escaped as %%
        else:
            end += 1
    stem = name[:end]
    return os.path.join(os.path.dirname(pattern % 0), f"{stem.replace('%%', '%')}index.json")


def _check_index_is_ours(index_path: str, pattern: str) -> None:
    """Refuse to overwrite the index of shards of another pattern (``%04d-train.tar`` and ``%04d-val.tar`` in one
    folder share ``index.json``); an index of this pattern's own shards is rewritten."""
    try:
        with open(index_path) as f:
            urls = [s[_URL] for s in json.load(f)[_SHARDS]]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no index there, or not one of ours: nothing to mix up
    base = os.path.dirname(index_path) or "."
    for k, url in enumerate(urls):
        if os.path.normpath(os.path.join(base, url)) != os.path.normpath(pattern % k):
            raise ValueError(
                f"pattern should not share its index with other shards: {index_path} indexes {url!r}, which "
                f"{pattern!r} would not write; give each dataset its own folder or a prefix before the shard "
                f"number (e.g. 'train-%04d.tar')"
            )


def write_shards(
    dataset: Any,
    pattern: str | os.PathLike[str],
    *,
    maxcount: int = 10_000,
    image_format: str = "jpg",
    quality: int = 95,
    progress: bool = True,
) -> str:
    """Write a map-style ``(input, label)`` dataset as webdataset tar shards and an index JSON.

    Images (uint8 or float ``(C, H, W)`` tensors/arrays with 1 or 3 channels, float ones in ``[0, 1]``, and PIL
    images) are stored as ``jpg`` or ``png``; any other tensor, array or number as ``npy``, and with
    ``image_format="npy"`` PIL images of other modes (``I;16``, ``F``, ``RGBA``, ...) as ``(C, H, W)`` ``npy``
    arrays of their exact pixels; labels as ``cls``. Sample
    ``i`` gets ``__key__`` ``f"{i:09d}"``, its global id. The index, ``<prefix>index.json`` next to the shards (e.g.
    ``train-index.json`` for ``train-%06d.tar``), lists each shard's URL (relative to the index), sample count and
    first id, the total, and ``num_classes`` (``len(dataset.classes)`` when the dataset has ``classes``, else the
    largest label + 1).

    Args:
        dataset: Any object with ``__len__`` and ``__getitem__`` returning ``(input, label)`` (further fields
            are not written; a ``UserWarning`` says so once).
        pattern: Shard file names, a ``%``-format taking the shard number, e.g. ``"out/train-%06d.tar"``.
        maxcount: Samples per shard.
        image_format: ``"jpg"`` (lossy), ``"png"`` (lossless) or ``"npy"`` (store tensors unchanged).
        quality: JPEG quality in ``[1, 100]``.
        progress: Show a tqdm progress bar (when tqdm is installed).

    Returns:
        The path of the index JSON.

    Raises:
        ValueError: For an empty dataset, a pattern without a shard number in its file name, float images with
            values outside ``[0, 1]`` or not finite, PIL images of a mode other than ``L``/``RGB`` (``1`` and ``P``
            without transparency convert exactly) unless ``image_format="npy"``, negative labels, ``maxcount``
            below 1, ``quality`` outside ``[1, 100]``, or an ``image_format`` other than ``"jpg"``, ``"png"``
            and ``"npy"``.
        TypeError: For samples that are not ``(input, label)`` pairs with integer labels, a ``pattern`` that is
            not a str or path, ``maxcount``/``quality`` not ints, ``image_format`` not a str, or a ``progress``
            that is not a bool.
    """
    import webdataset as wds

    check_int("maxcount", maxcount, minimum=1)
    check_int("quality", quality, minimum=1)
    check_bool("progress", progress)
    if quality > 100:
        raise ValueError(f"quality should be in [1, 100], got quality={quality}")
    check_choice("image_format", image_format, _IMAGE_FORMATS)
    if not isinstance(pattern, (str, os.PathLike)):
        raise TypeError(f"pattern should be a str or path, got pattern of type {type(pattern).__name__}")
    pattern = os.fspath(pattern)
    try:
        names = (pattern % 0, pattern % 1)
    except (TypeError, ValueError):
        names = (pattern, pattern)
    if names[0] == names[1]:
        raise ValueError(f"pattern should contain a %-format for the shard number like %06d, got pattern={pattern!r}")
    if os.path.dirname(names[0]) != os.path.dirname(names[1]):
        raise ValueError(
            "pattern should have its %-format for the shard number in the file name, not the folder, got "
            f"pattern={pattern!r} (shards {names[0]!r}, {names[1]!r})"
        )
    try:
        n = len(dataset)
    except TypeError:
        raise TypeError(f"dataset should have __len__ and __getitem__, got {type(dataset).__name__}") from None
    if n == 0:
        raise ValueError("dataset should not be empty, got len(dataset)=0")
    folder = os.path.dirname(names[0])
    if folder:
        os.makedirs(folder, exist_ok=True)
    index_path = _index_path(pattern)
    _check_index_is_ours(index_path, pattern)
    width = max(_KEY_WIDTH, len(str(n - 1)))
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="write_shards", unit="sample")
        except ImportError:  # tqdm is optional
            bar = None
    shards: list[dict[str, Any]] = []
    writer = None
    max_label = -1
    warned = warned_layout = False
    try:
        for i in range(n):
            if writer is None or shards[-1][_COUNT] == maxcount:
                if writer is not None:
                    writer.close()
                path = pattern % len(shards)
                # An integer mtime: a float one makes tarfile add a PAX header to every member (slower to read).
                writer = wds.TarWriter(path, encoder=False, mtime=0)
                shards.append({_URL: os.path.relpath(path, os.path.dirname(index_path) or "."), _COUNT: 0, _OFFSET: i})
            sample = dataset[i]
            if not isinstance(sample, (tuple, list)) or len(sample) < 2:
                raise TypeError(
                    f"samples should be (input, label) pairs, got dataset[{i}] of type {type(sample).__name__}"
                )
            if len(sample) > 2 and not warned:
                warnings.warn(
                    f"write_shards stores each sample's input and label only: dataset[{i}] has {len(sample)} fields, "
                    f"and the other {len(sample) - 2} are not written (warned once)",
                    UserWarning,
                    stacklevel=2,
                )
                warned = True
            ext, data = _encode_input(sample[0], i, image_format, quality)
            if ext == "npy" and image_format != "npy" and not warned_layout and _channels_last(sample[0]):
                warnings.warn(
                    f"dataset[{i}][0] has shape {tuple(sample[0].shape)}, channels last, so it is stored as npy "
                    f"(unchanged), not as {image_format}: {image_format} takes (C, H, W) images with C = 1 or 3, "
                    "e.g. torch.from_numpy(image).permute(2, 0, 1) (warned once)",
                    UserWarning,
                    stacklevel=2,
                )
                warned_layout = True
            label = _label(sample[1], i)
            max_label = max(max_label, label)
            writer.write({"__key__": f"{i:0{width}d}", ext: data, "cls": str(label).encode("ascii")})
            shards[-1][_COUNT] += 1
            if bar is not None:
                bar.update(1)
    finally:
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()
    classes = getattr(dataset, "classes", None)
    num_classes = len(classes) if isinstance(classes, Sequence) and len(classes) > max_label else max_label + 1
    index = {
        _FORMAT: INDEX_FORMAT,
        _VERSION: INDEX_VERSION,
        _TOTAL: n,
        _NUM_CLASSES: num_classes,
        _SHARDS: shards,
    }
    with open(index_path, "w") as f:
        json.dump(index, f, indent=1)
    return index_path


# ---------------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ShardCatalog:
    """What a stream needs to plan epochs: shard URLs and the sample ids each shard holds.

    Attributes:
        urls: The shard URLs.
        counts: ``(S,)`` int64 samples per shard.
        ids: ``(sum(counts),)`` int64 sample ids, shard after shard, in each shard's order.
        starts: ``(S + 1,)`` int64 offsets of each shard's ids in ``ids``.
        num_ids: Size of the id space (the loss table's size).
        hashed: Ids are hashes of (shard basename, key) into ``num_ids`` slots (foreign keys, with ``num_ids``
            given), rather than integer keys or positions.
        num_classes: From the index, when it says.
        collisions: Samples whose hashed id is shared with another sample.
        key_hashes: For ids given by position (foreign keys, by default): ``(sum(counts),)`` int64 hashes of
            (shard basename, key), which the reader checks each sample's key against; else ``None``.
    """

    urls: list[str]
    counts: Tensor
    ids: Tensor
    starts: Tensor
    num_ids: int
    hashed: bool = False
    num_classes: int | None = None
    collisions: int = 0
    key_hashes: Tensor | None = None

    @property
    def total(self) -> int:
        """Number of samples in the shards (what ``len(dataset)`` is for a map-style dataset)."""
        return int(self.ids.numel())

    def where(self, sample_id: int) -> list[tuple[str, int]]:
        """Where the samples with id ``sample_id`` are: ``(shard URL, position in the shard)`` pairs.

        One pair, or none for an id no sample has; several only for colliding hashed ids. For a look at the
        samples :meth:`~enlight_data.EnlightLoader.removed_indices` lists, say.

        Raises:
            TypeError: If ``sample_id`` is not an int.
        """
        check_int("sample_id", sample_id)
        if not 0 <= sample_id < self.num_ids:
            return []
        found = torch.nonzero(self.ids == sample_id).flatten()
        shards = torch.searchsorted(self.starts, found, right=True) - 1
        return [(self.urls[int(s)], int(f - self.starts[s])) for f, s in zip(found, shards)]

    def kept(self, excluded: Tensor | None) -> Tensor:
        """``(S,)`` samples per shard whose id is not set in the bool mask ``excluded``."""
        if excluded is None:
            return self.counts.clone()
        gone = excluded[self.ids].to(torch.int64).cumsum(0)
        gone = torch.cat([torch.zeros(1, dtype=torch.int64), gone])
        return self.counts - (gone[self.starts[1:]] - gone[self.starts[:-1]])


def hash_id(url: str, key: str, num_ids: int) -> int:
    """A stable id in ``[0, num_ids)`` for a foreign key: blake2b-64 of ``"<shard basename>/<key>"``, modulo.

    The basename leaves out a URL's query and fragment, so a presigned URL whose token changes from run to run
    (``...train-0001.tar?X-Amz-Signature=...``) keeps its samples' ids.
    """
    check_int("num_ids", num_ids, minimum=1)
    base = _without_query(url).rsplit("/", 1)[-1]
    digest = hashlib.blake2b(f"{base}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_ids


def _without_query(url: str) -> str:
    """``url`` without its query and fragment (a presigned URL's changing token) or a trailing ``/``."""
    return re.split(r"[?#]", url, maxsplit=1)[0].rstrip("/")


def shard_names(urls: list[str]) -> list[str]:
    """What tells the shards apart, for a checkpoint: the fewest trailing path parts that are distinct for all.

    ``train-0001.tar`` when the file names differ, ``cats/shard-000.tar`` and ``dogs/shard-000.tar`` when they do
    not. Queries and fragments are left out, and so is a common folder: a presigned URL whose token changes, or
    shards copied to another disk, are the same shards; two same-named shards given in swapped order are not.
    """
    parts = [_without_query(u).split("/") for u in urls]
    distinct = len(set(map(tuple, parts)))
    depth = 1
    while depth < max(map(len, parts)) and len({tuple(p[-depth:]) for p in parts}) < distinct:
        depth += 1
    return ["/".join(p[-depth:]) for p in parts]


_SKIP_META = re.compile(r"__[^/]*__($|/)")


def _is_local(url: str) -> bool:
    return url.startswith("file:") or "://" not in url and not url.startswith("pipe:")


def local_path(url: str) -> str | None:
    """The file path of a local shard URL (a path or ``file:``), else None (``pipe:``, ``http(s)://``, ...).

    ``file:/a/b.tar``, ``file:///a/b.tar`` and ``file://localhost/a/b.tar`` are all ``/a/b.tar``.
    """
    if not _is_local(url):
        return None
    if url.startswith("file:"):
        return urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    return url


def close_stream(stream: Any, *, drain: bool) -> None:
    """Close a shard's stream (a file, or a webdataset ``Pipe`` for ``pipe:`` and remote URLs).

    A pipe's command exits with an error when its reader stops early (curl: 23, or a SIGPIPE), and a tar reader
    stops at the end-of-archive marker, before the padding after it. So after a read to the tar's end (``drain``)
    the rest is read first, and the command's exit status then means what it says; after an early stop (a segment
    that ends inside a shard, a loop left early, an error) the command is stopped and its status ignored.
    """
    proc = getattr(stream, "proc", None)
    if proc is not None:
        if drain:
            while stream.read(1 << 16):
                pass
        else:
            stream.ignore_errors = True
            proc.kill()
    stream.close()


def _check_exists(urls: Sequence[str]) -> None:
    for url in urls:
        path = local_path(url)
        if path is not None and os.path.isdir(path):
            raise IsADirectoryError(f"shard {url!r} is a directory, not a tar file")
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"shard {url!r} does not exist")


def member_key(info: tarfile.TarInfo) -> tuple[str, str] | None:
    """``(key, extension)`` of a tar member as webdataset groups files, or None for members that are no sample data.

    A new sample starts where the key differs from the previous member's. :func:`load_catalog`'s scan and the
    stream's reader both count samples with this, so a sample's position in a shard means the same to both.
    """
    from webdataset.tariterators import base_plus_ext, meta_prefix, meta_suffix

    name = info.name
    if not info.isreg() or "/" not in name and name.startswith(meta_prefix) and name.endswith(meta_suffix):
        return None
    if _SKIP_META.search(name):  # webdataset's tar_file_iterator(skip_meta=...): __meta__/... and the like
        return None
    prefix, suffix = base_plus_ext(name)
    if prefix is None:
        return None
    return prefix, suffix


class _EndCheckedTarInfo(tarfile.TarInfo):
    """A TarInfo that notes on its TarFile how the member loop ended.

    tarfile ends the loop without a word at a header it cannot read past the first one (a bad checksum, a file cut
    inside a header or at a member boundary), exactly as at the end-of-archive marker. This records which it was
    (``_end_error``: None at the marker), so that a shard read without an index cannot lose its tail silently.
    """

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> _EndCheckedTarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:  # type: ignore[attr-defined]  # a block of zeros: the end-of-archive marker
            tar._end_error = None  # type: ignore[attr-defined]
            raise
        except tarfile.HeaderError as exc:
            tar._end_error = exc  # type: ignore[attr-defined]
            raise


def _scan(url: str, handler: str) -> list[str]:
    """The sample keys of one shard, read from its tar headers (grouped as webdataset groups files)."""
    import webdataset as wds

    keys: list[str] = []
    try:
        stream = wds.gopen(url, "rb")
        finished = False
        try:
            with tarfile.open(fileobj=stream, mode="r|*", tarinfo=_EndCheckedTarInfo) as tar:
                for info in tar:
                    member = member_key(info)
                    if member is not None and (not keys or keys[-1] != member[0]):
                        keys.append(member[0])
                    tar.members = []  # type: ignore[attr-defined]  # a stream-mode TarFile keeps every TarInfo otherwise
                end = getattr(tar, "_end_error", None)
                if end is not None:
                    raise tarfile.ReadError(f"corrupt or truncated tar header ({type(end).__name__}: {end})")
            finished = True
        finally:
            close_stream(stream, drain=finished)
    except Exception as exc:
        where = f"after key {keys[-1]!r}" if keys else "at its start"
        err = ShardError(f"shard {url!r} is unreadable {where}: {type(exc).__name__}: {exc}")
        if handler == "raise":
            raise err from exc
        warnings.warn(f"{err}; using the {len(keys)} samples before it", RuntimeWarning, stacklevel=3)
    return keys


def _index_int(path: str, where: str, value: Any, minimum: int) -> int:
    """``value`` of an index field, checked to be an integer ``>= minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"index {path!r}: {where} should be an integer >= {minimum}, got {value!r}")
    return value


def _from_index(path: str) -> ShardCatalog:
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"index {path!r} is not valid JSON: {exc}") from exc
    if not isinstance(index, dict) or index.get(_FORMAT) != INDEX_FORMAT or _SHARDS not in index:
        raise ValueError(f"index {path!r} should be an {INDEX_FORMAT} index written by write_shards()")
    if index.get(_VERSION) != INDEX_VERSION:
        raise ValueError(f"index {path!r} should have version {INDEX_VERSION}, got version={index.get(_VERSION)!r}")
    shards = index[_SHARDS]
    if not isinstance(shards, list):
        raise ValueError(f"index {path!r}: {_SHARDS!r} should be a list of shards, got {type(shards).__name__}")
    folder = os.path.dirname(path)
    urls, counts, offsets = [], [], []
    for i, shard in enumerate(shards):
        where = f"{_SHARDS}[{i}]"
        if not isinstance(shard, dict) or any(k not in shard for k in (_URL, _COUNT, _OFFSET)):
            got = sorted(shard) if isinstance(shard, dict) else type(shard).__name__
            raise ValueError(f"index {path!r}: {where} should have fields {[_URL, _COUNT, _OFFSET]}, got {got}")
        url = shard[_URL]
        if not isinstance(url, str) or not url:
            raise ValueError(f"index {path!r}: {where}.{_URL} should be a non-empty string, got {url!r}")
        path_ = local_path(url)
        urls.append(url if path_ is None or os.path.isabs(path_) else os.path.join(folder, path_))
        counts.append(_index_int(path, f"{where}.{_COUNT}", shard[_COUNT], 0))
        offsets.append(_index_int(path, f"{where}.{_OFFSET}", shard[_OFFSET], 0))
    if not urls or sum(counts) == 0:
        raise ValueError(f"source should hold samples, got an index {path!r} with {len(urls)} shards and no samples")
    total = _index_int(path, _TOTAL, index.get(_TOTAL, sum(counts)), 1)
    num_classes = index.get(_NUM_CLASSES)
    if num_classes is not None:
        _index_int(path, _NUM_CLASSES, num_classes, 1)
    # The ids of the shards, offset .. offset + count - 1, should be disjoint and below the total.
    end = 0
    for i in sorted(range(len(urls)), key=lambda j: offsets[j]):
        if counts[i] == 0:
            continue
        if offsets[i] < end or offsets[i] + counts[i] > total:
            raise ValueError(
                f"index {path!r}: {_SHARDS}[{i}] holds ids {offsets[i]}..{offsets[i] + counts[i] - 1}, which should "
                f"be below {_TOTAL}={total} and not overlap another shard's"
            )
        end = offsets[i] + counts[i]
    flat = torch.cat([torch.arange(o, o + c, dtype=torch.int64) for o, c in zip(offsets, counts)])
    return ShardCatalog(
        urls=urls,
        counts=torch.tensor(counts, dtype=torch.int64),
        ids=flat,
        starts=torch.tensor([0, *np.cumsum(counts).tolist()], dtype=torch.int64),
        num_ids=total,
        num_classes=num_classes,
    )


def _from_urls(urls: list[str], *, num_ids: int | None, handler: str) -> ShardCatalog:
    keys = [_scan(url, handler) for url in urls]
    counts = [len(k) for k in keys]
    if sum(counts) == 0:
        raise ValueError(f"source should hold samples, got {len(urls)} shards with none: {urls[:3]}")
    flat = [k for ks in keys for k in ks]
    # NOTE [ Integer keys ]
    # Integer keys are the ids only when they are distinct across all shards (keys that restart in every shard
    # would silently share ids) and below 16 * samples (large keys such as database ids or timestamps would size
    # the loss table by the largest key). Other keys get their sample's position in the scan (shard after shard) as
    # id: one loss entry per sample, none shared, and a table of the samples' number. The reader checks each
    # sample's key against a hash of (shard basename, key) kept per position, and the stream's signature holds
    # the shards' names (shard_names: as many path parts as tell them apart) and sizes, so neither a shard list in
    # another order nor rewritten shards can misplace losses.
    # Only num_ids= asks for hashed ids (ids that follow a key wherever it is; colliding ids share an entry).
    integer = num_ids is None and all(k.isascii() and k.isdigit() for k in flat)
    if integer:
        values = [int(k) for k in flat]
        integer = max(values) < _HASH_FACTOR * len(flat) and len(set(values)) == len(values)
    key_hashes = None
    if integer:
        ids = torch.tensor(values, dtype=torch.int64)
        size = int(ids.max()) + 1
    elif num_ids is None:
        ids = torch.arange(len(flat), dtype=torch.int64)
        size = len(flat)
        key_hashes = torch.tensor([hash_id(u, k, KEY_SPACE) for u, ks in zip(urls, keys) for k in ks],
                                  dtype=torch.int64)
    else:
        size = num_ids
        ids = torch.tensor([hash_id(u, k, size) for u, ks in zip(urls, keys) for k in ks], dtype=torch.int64)
    uses = torch.bincount(ids, minlength=size)
    return ShardCatalog(
        urls=urls,
        counts=torch.tensor(counts, dtype=torch.int64),
        ids=ids,
        starts=torch.tensor([0, *np.cumsum(counts).tolist()], dtype=torch.int64),
        num_ids=size,
        hashed=num_ids is not None,
        collisions=int(uses[uses > 1].sum()),
        key_hashes=key_hashes,
    )


def load_catalog(source: Any, *, num_ids: int | None = None, handler: str = "raise") -> ShardCatalog:
    """The shard catalogue of an index JSON, a brace pattern or a list of shard URLs.

    Without an index the shards' tar headers are scanned once (counts and keys). Integer keys that are distinct
    across the shards and below ``16 * samples`` are the ids (the table holds ``max id + 1`` entries); other keys
    get the sample's position in the scan, shard after shard (``0 .. samples - 1``), and the reader checks each key
    at its position. With ``num_ids``, every key is hashed with :func:`hash_id` into ``num_ids`` slots instead (ids
    that follow a sample (its shard file's name and its key) to another shard list, reordered or a subset; colliding
    ids share a loss entry). See NOTE [ Integer keys ].

    Args:
        source: An index JSON written by :func:`enlight_data.write_shards`, a brace pattern
            (``"shards/train-{000000..000099}.tar"``) or a list of shard URLs or paths.
        num_ids: Hash every key into this many ids (shards without an index whose keys are not integers); ``None``:
            the keys' own integers, or their positions.
        handler: ``"raise"``: a shard whose tar headers cannot be read raises :class:`ShardError`; ``"warn"``: a
            warning, and the samples before the damage are kept.

    Returns:
        The :class:`ShardCatalog`: the shards' URLs, samples per shard, the ids and the size of the id space.

    Raises:
        ValueError: For an empty source, an index with missing or invalid fields (named in the message),
            ``num_ids`` with an index or below 1, or a ``handler`` other than ``"raise"`` and ``"warn"``.
        FileNotFoundError: For a missing local shard or index.
        ShardError: For an unreadable shard, with ``handler="raise"``.
        TypeError: For a source of another type, or ``num_ids`` not an int.
    """
    import braceexpand

    check_int("num_ids", num_ids, minimum=1, allow_none=True)
    check_choice("handler", handler, HANDLERS)
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, str):
        if not source:
            raise ValueError("source should be an index JSON, a brace pattern or a list of shard URLs, got ''")
        if source.lower().endswith(".json"):  # an index (any case of its extension: "INDEX.JSON")
            if not os.path.isfile(source):
                raise FileNotFoundError(f"index {source!r} does not exist")
            if num_ids is not None:
                raise ValueError(
                    f"num_ids applies to shards without an index (their keys are hashed); an index gives every "
                    f"sample its id, got num_ids={num_ids} with the index {source!r}"
                )
            catalog = _from_index(source)
            _check_exists(catalog.urls)
            return catalog
        urls = list(braceexpand.braceexpand(source))
    elif isinstance(source, (list, tuple)):
        if not all(isinstance(u, (str, os.PathLike)) for u in source):
            kinds = [type(u).__name__ for u in source][:5]
            raise TypeError(f"source should be a list of shard URLs (str), got items of types {kinds}")
        urls = [os.fspath(u) for u in source]
    else:
        raise TypeError(
            f"source should be an index JSON path, a brace pattern or a list of shard URLs, got {type(source).__name__}"
        )
    if not urls:
        raise ValueError("source should name at least one shard, got an empty list")
    _check_exists(urls)
    return _from_urls(urls, num_ids=num_ids, handler=handler)
