"""Image codecs for the shards: torchvision's where it has them, Pillow's otherwise.

torchvision 0.29 deprecates its image encoders and decoders (TorchCodec supersedes them) and a later release will
remove them; some builds already come without them (``Couldn't load the image extension``). :func:`write_shards`
and ``stream(decode="rgb8" | "l8")`` then use Pillow, a dependency already, which gives the same pixels:

- JPEG and PNG decode to identical tensors, in RGB and in grayscale (for JPEG, Pillow's draft mode reads
  libjpeg's own luma, as torchvision's decoder does; for PNG, the luma is libpng's fixed-point sum with
  torchvision's weights); WebP to grayscale may differ by a level;
- JPEG encoding gives the same bytes at the same quality (both drive libjpeg-turbo with its defaults); PNG
  encoding compresses differently but holds the same pixels;
- a 16-bit PNG, which torchvision decodes to uint16, is refused (Pillow would keep 8 of its bits).

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

    torchvision decodes a 16-bit PNG to uint16; Pillow cannot keep its bits, so the fallback refuses it.

    Raises:
        ValueError: For a 16-bit PNG without torchvision's codec.
        Exception: Whatever the codec raises for data it cannot decode.
    """
    if backend() == _TORCHVISION:
        from torchvision.io import ImageReadMode, decode_image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=ImageReadMode.GRAY if gray else ImageReadMode.RGB,
            )
    from PIL import Image

    if data[:8] == _PNG_SIGNATURE and len(data) > 24 and data[24] == 16:  # IHDR's bit depth
        raise ValueError(
            "16-bit PNGs are decoded by torchvision's codec only (Pillow would keep 8 of the 16 bits), and this "
            "torchvision has none; store such images as npy (write_shards(image_format='npy'))"
        )
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
