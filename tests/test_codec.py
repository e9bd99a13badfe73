"""The shards' image codecs: Pillow stands in for torchvision's (deprecated in 0.29, missing in some builds)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import enlight_data as ed
from enlight_data import _codec

# The comparisons need torchvision's codecs (the pinned 0.29 has them; a build without them runs the rest).
needs_torchvision = pytest.mark.skipif(not _codec._torchvision_works(), reason="this torchvision has no image codecs")


@pytest.fixture
def use(monkeypatch):
    """``use(name)`` makes this process use that codec, as if it had been detected."""

    def choose(name: str) -> None:
        monkeypatch.setattr(_codec, "_backend", name)

    return choose


def _photos() -> list[torch.Tensor]:
    """scikit-learn's two sample photos (427×640 RGB), cropped, and random pixels: uint8 (3, H, W) tensors."""
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(a[:160, :200].copy()).permute(2, 0, 1).contiguous() for a in load_sample_images().images]
    noise = torch.randint(0, 256, (3, 64, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return [*photos, noise]  # and every colour's luma rounding


@needs_torchvision
def test_the_codec_in_use_is_detected_once(monkeypatch):
    monkeypatch.setattr(_codec, "_backend", None)
    assert _codec.backend() == "torchvision"  # this torchvision has its codecs
    import torchvision.io

    def broken(*args, **kwargs):
        raise RuntimeError("Couldn't load the image extension")

    monkeypatch.setattr(_codec, "_backend", None)
    monkeypatch.setattr(torchvision.io, "decode_image", broken)  # a build without image ops
    assert _codec.backend() == "pillow"
    monkeypatch.setattr(torchvision.io, "decode_image", lambda *a, **k: pytest.fail("decided once: not asked again"))
    assert _codec.backend() == "pillow"


@needs_torchvision
@pytest.mark.parametrize("image_format", ["jpg", "png"])
def test_pillow_decodes_the_same_pixels_as_torchvision(use, image_format):
    for photo in _photos():
        use("torchvision")
        data = _codec.encode(photo, image_format=image_format, quality=90)
        rgb, gray = _codec.decode(data, gray=False), _codec.decode(data, gray=True)
        use("pillow")
        assert torch.equal(_codec.decode(data, gray=False), rgb)
        pillow_gray = _codec.decode(data, gray=True)
        assert pillow_gray.shape == gray.shape == (1, *photo.shape[1:]) and pillow_gray.dtype == torch.uint8
        assert torch.equal(pillow_gray, gray)  # JPEG: libjpeg's luma; PNG: libpng's, with torchvision's weights
        if image_format == "png":
            assert torch.equal(rgb, photo)  # lossless


@needs_torchvision
def test_pillow_encodes_jpeg_bytes_like_torchvision_and_png_losslessly(use):
    for photo in [*_photos(), _photos()[0][:1]]:  # RGB and one grayscale channel
        use("torchvision")
        jpg, png = (_codec.encode(photo, image_format=f, quality=85) for f in ("jpg", "png"))
        use("pillow")
        assert _codec.encode(photo, image_format="jpg", quality=85) == jpg
        back = _codec.decode(_codec.encode(photo, image_format="png", quality=85), gray=photo.shape[0] == 1)
        assert torch.equal(back, photo)
        use("torchvision")
        assert torch.equal(_codec.decode(png, gray=photo.shape[0] == 1), photo)


@needs_torchvision
@pytest.mark.parametrize("workers", [0, 2])
def test_shards_written_and_streamed_with_pillow_match_torchvision(use, tmp_path, workers):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 12, 16), dtype=torch.uint8, generator=g)
    images[:, :, :6] //= 8  # some structure, so JPEG is not all noise
    data = TensorDataset(images, torch.arange(24) % 3)
    batches = {}
    for name in ("torchvision", "pillow"):
        use(name)
        index = ed.write_shards(data, str(tmp_path / name / "s-%03d.tar"), maxcount=8, progress=False)
        loader = ed.stream(index, ed.mixup_pause(1, alpha=0.2), batch_size=6, num_workers=workers, seed=0)
        batches[name] = [(x, y) for x, y in loader]
        assert sum(len(y) for _, y in batches[name]) == 24
    for (x1, y1), (x2, y2) in zip(batches["torchvision"], batches["pillow"]):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert x1.dtype == torch.float32 and x1.shape[1:] == (3, 12, 16)  # mixed: float, same scale


def test_gpu_decoding_needs_torchvision_decode_jpeg(monkeypatch):
    import torchvision.io

    assert _codec.gpu_jpeg_decoder() is torchvision.io.decode_jpeg
    monkeypatch.delattr(torchvision.io, "decode_jpeg")
    with pytest.raises(RuntimeError, match="decode='gpu' needs torchvision.io.decode_jpeg"):
        _codec.gpu_jpeg_decoder()


def test_a_grayscale_photo_round_trips_through_pillow(use):
    use("pillow")
    gray = torch.from_numpy(np.arange(48, dtype=np.uint8).reshape(1, 6, 8) * 5)
    assert torch.equal(_codec.decode(_codec.encode(gray, image_format="png", quality=95), gray=True), gray)
    rgb = _codec.decode(_codec.encode(gray, image_format="png", quality=95), gray=False)
    assert rgb.shape == (3, 6, 8) and all(torch.equal(rgb[c : c + 1], gray) for c in range(3))


@pytest.mark.parametrize("codec", ["torchvision", "pillow"])
@pytest.mark.parametrize("gray", [True, False])
def test_both_codecs_refuse_a_16_bit_png_rather_than_give_uint16_or_keep_8_of_its_bits(use, codec, gray):
    import io

    from PIL import Image

    if codec == "torchvision" and not _codec._torchvision_works():
        pytest.skip("this torchvision has no image codecs")
    buf = io.BytesIO()
    Image.fromarray(np.array([[0, 2000], [4000, 65535]], dtype=np.uint16)).save(buf, format="PNG")
    data = buf.getvalue()
    assert data[24] == 16  # a 16-bit grayscale PNG
    use(codec)
    with pytest.raises(ValueError, match=r"a 16-bit PNG is not decoded to 8 bits .*image_format='npy'"):
        _codec.decode(data, gray=gray)


@needs_torchvision
@pytest.mark.parametrize("lossless", [True, False])
def test_webp_decodes_alike_in_both_codecs_and_to_one_channel_in_grayscale(use, lossless):
    import io

    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="WEBP", lossless=lossless, quality=90)
    data = buf.getvalue()
    for gray in (True, False):
        decoded = {}
        for codec in ("torchvision", "pillow"):
            use(codec)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # torchvision warns it cannot decode WebP to grayscale
                decoded[codec] = _codec.decode(data, gray=gray)
        assert decoded["torchvision"].shape == (1 if gray else 3, 9, 13) and decoded["torchvision"].dtype == torch.uint8
        assert torch.equal(decoded["torchvision"], decoded["pillow"])
