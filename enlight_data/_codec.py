"""Image codecs for the shards: torchvision's where it has them, Pillow's otherwise.

torchvision 0.29 deprecates its image encoders and decoders (TorchCodec supersedes them) and a later release will
remove them; some builds already come without them (``Couldn't load the image extension``). :func:`write_shards`
and ``stream(decode="rgb8" | "l8")`` then use Pillow, a dependency already, which gives the same pixels:

- JPEG and PNG decode to identical tensors, in RGB and in grayscale (for JPEG, Pillow's draft mode reads
  libjpeg's own luma, as torchvision's decoder does; for PNG, the luma is libpng's fixed-point sum with
  torchvision's weights); WebP, which torchvision's codec only decodes in colour, is turned to grayscale by that
  same luma in both;
- JPEG encoding gives the same bytes at the same quality (both drive libjpeg-turbo with its defaults); PNG
  encoding compresses differently but holds the same pixels;
- a 16-bit PNG is refused by both: these modes give uint8, and Pillow would keep 8 of its bits (torchvision would
  give uint16, which the rest of a uint8 pipeline misreads).

Which codec a process uses is decided once, on first use, by encoding and decoding a 1-pixel image.
``decode="gpu"`` (nvjpeg) has no Pillow counterpart: it needs torchvision's ``decode_jpeg``.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["backend", "decode", "encode", "gpu_jpeg_decoder"]

_TORCHVISION = "torchvision"
_PILLOW = "pillow"
_backend: str | None = None
# torchvision calls png_set_rgb_to_gray(0.2989, 0.587); libpng keeps floor(w * 32768) per weight, blue the rest,
# and sums in 15-bit fixed point, rounding down.
_LUMA = np.array([9794, 19234, 3740], dtype=np.uint32)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _torchvision_works() -> bool:
    """Whether torchvision's image codecs import and round-trip a 1-pixel PNG here."""
    try:
        from torchvision.io import ImageReadMode, decode_image, encode_png

        with warnings.catch_warnings():  # torchvision 0.29 warns on every call of its codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            pixel = torch.tensor([[[7]], [[8]], [[9]]], dtype=torch.uint8)
            back = decode_image(encode_png(pixel), mode=ImageReadMode.RGB)
        return torch.equal(back, pixel)
    except Exception:  # noqa: BLE001 - missing, removed or broken: any of them means Pillow
        return False


def backend() -> str:
    """``"torchvision"`` or ``"pillow"``: the codec this process uses (decided on first call)."""
    global _backend
    if _backend is None:
        _backend = _TORCHVISION if _torchvision_works() else _PILLOW
    return _backend


def decode(data: bytes, *, gray: bool) -> Tensor:
    """A JPEG, PNG or WebP image as a uint8 ``(3, H, W)`` tensor, or ``(1, H, W)`` with ``gray``.

    Raises:
        ValueError: For a 16-bit PNG (see the module docstring).
        Exception: Whatever the codec raises for data it cannot decode.
    """
    if data[:8] == _PNG_SIGNATURE and len(data) > 24 and data[24] == 16:  # IHDR's bit depth
        raise ValueError(
            "a 16-bit PNG is not decoded to 8 bits (decode='rgb8' and 'l8' give uint8): store such images as npy "
            "(write_shards(image_format='npy')) or pass stream(decode=) a function that keeps their 16 bits"
        )
    if backend() == _TORCHVISION:
        from torchvision.io import ImageReadMode, decode_image

        webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"  # torchvision decodes WebP in colour only
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=ImageReadMode.GRAY if gray and not webp else ImageReadMode.RGB,
            )
        if gray and image.shape[0] != 1:
            luma = torch.from_numpy(_LUMA.astype(np.int64)).view(3, 1, 1)
            image = ((image.to(torch.int64) * luma).sum(0, keepdim=True) >> 15).to(torch.uint8)
        return image
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if gray and image.format == "JPEG":
            image.draft("L", image.size)  # libjpeg's own luma, as torchvision's decoder reads it
            pixels = np.asarray(image.convert("L"))
        elif gray and image.mode == "L":
            pixels = np.asarray(image)
        else:
            pixels = np.asarray(image.convert("RGB"))
            if gray:  # libpng's luma with torchvision's weights (0.2989, 0.587), in its 15-bit fixed point
                pixels = ((pixels.astype(np.uint32) @ _LUMA) >> 15).astype(np.uint8)
    tensor = torch.from_numpy(pixels.copy())
    return tensor.unsqueeze(0) if gray else tensor.permute(2, 0, 1).contiguous()


def encode(image: Tensor, *, image_format: str, quality: int) -> bytes:
    """A uint8 ``(C, H, W)`` tensor (C = 1 or 3) as ``"jpg"`` (at ``quality``) or ``"png"`` bytes."""
    if backend() == _TORCHVISION:
        from torchvision.io import encode_jpeg, encode_png

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            encoded = encode_png(image) if image_format == "png" else encode_jpeg(image, quality=quality)
        return encoded.numpy().tobytes()
    from PIL import Image

    pixels = image.numpy()
    picture = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    buf = io.BytesIO()
    if image_format == "png":
        picture.save(buf, format="PNG")
    else:
        picture.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def gpu_jpeg_decoder() -> Callable[..., Any]:
    """torchvision's ``decode_jpeg`` (it decodes on CUDA with nvjpeg), for ``decode="gpu"``.

    Raises:
        RuntimeError: If this torchvision has no ``decode_jpeg``.
    """
    try:
        from torchvision.io import decode_jpeg
    except ImportError as exc:
        raise RuntimeError(
            "decode='gpu' needs torchvision.io.decode_jpeg (GPU JPEG decoding), which this torchvision does not "
            "have; use decode='rgb8' (decoded in the workers)"
        ) from exc
    return decode_jpeg
