"""Batched, device-side image augmentation: random resized crop, flip, colour jitter, normalisation.

:class:`GpuAugment` follows the *draw, then apply* habit of Kornia and torchvision v2: :meth:`GpuAugment.draw`
samples every per-sample parameter as a tensor on the input's device with an explicit ``torch.Generator``, and
:meth:`GpuAugment.apply` is a deterministic function of the input and those parameters. There is no Python loop over
the samples and no device-to-host synchronisation in either step, so the whole augmentation can run on the GPU right
after GPU JPEG decoding, or on the CPU inside a loader worker.

:func:`apply_augment` is the adapter the loader calls: it accepts a :class:`GpuAugment`, a Kornia augmentation, or
any other callable.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._rng import derive_seed

__all__ = ["GpuAugment", "apply_augment"]

# Number of (area, aspect ratio) candidates drawn per sample, as in torchvision's RandomResizedCrop.
_NUM_TRIES = 10
# Uniforms per sample: T areas, T log-ratios, x offset, y offset, flip, jitter applied, 3 factors, hue shift.
_NUM_UNIFORMS = 2 * _NUM_TRIES + 8

# ITU-R 601-2 luma weights, the ones torchvision's rgb_to_grayscale uses.
_GRAY = (0.2989, 0.587, 0.114)

# State dict keys.
_SEED = "seed"
_GEN_STATE = "generator_state"
_GEN_DEVICE = "generator_device"

# NOTE [ Hue as a rotation about the gray axis ]
# torchvision shifts hue in HSV space: a non-linear, branchy map that costs a dozen passes over the image. We rotate
# RGB colours about the gray axis (1, 1, 1) by theta = 2*pi*hue_shift instead (Rodrigues' formula), a 3x3 linear map
# per sample: H(theta) = J/3 + cos(theta) (I - J/3) + sin(theta) [k]x, with J the all-ones matrix and [k]x the cross
# product matrix of k = (1, 1, 1)/sqrt(3). It turns red toward green for positive shifts like HSV does, keeps
# (R + G + B)/3 and gray pixels, and equals torchvision's HSV shift exactly at multiples of 1/3 turn (a cyclic
# permutation of the channels). In between they differ, since HSV's hue runs around a hexagon, not a circle: for
# uniformly random colours and a 0.1 turn shift, the mean distance between the two results is about 2/3 of the
# mean change either one makes. Brightness, contrast and saturation match torchvision exactly when nothing clips.
# (A rotation of the I/Q plane of YIQ, another common choice, turns red the wrong way and spaces primaries unevenly.)
# Being linear, the hue rotation composes with brightness, contrast and saturation (also linear per sample, the
# contrast mean being computed from the image) and with normalisation into ONE per-sample affine colour map
# `y = M x + c`, applied with one batched matmul and one clamp. The price: torchvision clamps to [0, 1] after every
# jitter step, we clamp once at the end (before normalising, folded into per-channel bounds).
_R3 = 1.0 / math.sqrt(3.0)
_HUE_BASES = (
    ((1 / 3, 1 / 3, 1 / 3), (1 / 3, 1 / 3, 1 / 3), (1 / 3, 1 / 3, 1 / 3)),
    ((2 / 3, -1 / 3, -1 / 3), (-1 / 3, 2 / 3, -1 / 3), (-1 / 3, -1 / 3, 2 / 3)),
    ((0.0, -_R3, _R3), (_R3, 0.0, -_R3), (-_R3, _R3, 0.0)),
)


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters drawn by :meth:`GpuAugment.draw`; all tensors share one device.

    Attributes:
        boxes: ``(B, 4)`` float32 crop boxes ``(x1, y1, x2, y2)`` in pixel-edge coordinates of each sample's own
            image (integer-valued; the crop covers pixels ``x1 .. x2 - 1``).
        flip: ``(B,)`` bool, horizontal flip.
        jitter: ``(B,)`` bool, whether colour jitter was applied.
        brightness: ``(B,)`` float32 brightness factors (1 where ``jitter`` is False).
        contrast: ``(B,)`` float32 contrast factors (1 where ``jitter`` is False).
        saturation: ``(B,)`` float32 saturation factors (1 where ``jitter`` is False).
        hue: ``(B,)`` float32 hue shifts in turns, in ``[-0.5, 0.5]`` (0 where ``jitter`` is False).
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor

    def to(self, device: torch.device | str) -> AugmentParams:
        """Return a copy with every tensor moved to ``device``."""
        return AugmentParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return self.boxes.shape[0]


def _check_prob(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} should be a real number in [0, 1], got {name}={value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} should be in [0, 1], got {name}={value}")
    return float(value)


def _check_range(name: str, value: Any, *, high: float) -> tuple[float, float]:
    """A pair ``(lo, hi)`` with ``0 < lo <= hi <= high``."""
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, Real) for v in value)
    ):
        raise TypeError(f"{name} should be a pair of real numbers (lo, hi), got {name}={value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not 0.0 < lo <= hi <= high:
        bound = f" <= {high:g}" if math.isfinite(high) else ""
        raise ValueError(f"{name} should satisfy 0 < lo <= hi{bound}, got {name}={tuple(value)}")
    return lo, hi


def _check_nonneg(name: str, value: Any, *, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} should be a real number, got {name}={value!r}")
    if not 0.0 <= value <= high:
        bound = f"[0, {high:g}]" if math.isfinite(high) else "[0, inf)"
        raise ValueError(f"{name} should be in {bound}, got {name}={value}")
    return float(value)


def _check_strength(strength: Any) -> float:
    return _check_prob("strength", strength)


def _check_stats(name: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) == 0
        or any(isinstance(v, bool) or not isinstance(v, Real) for v in value)
    ):
        raise TypeError(f"{name} should be None or a non-empty sequence of real numbers, got {name}={value!r}")
    return tuple(float(v) for v in value)


def _to_device_async(values: Sequence[float] | Sequence[Sequence[float]], device: torch.device) -> Tensor:
    """A small constant tensor on ``device`` without a synchronising host-to-device copy."""
    t = torch.tensor(values, dtype=torch.float32)
    return t if device.type == "cpu" else t.to(device, non_blocking=True)


class GpuAugment:
    """Random resized crop, horizontal flip, colour jitter and normalisation, batched on the input's device.

    The crop follows torchvision's ``RandomResizedCrop``: the area fraction is uniform in ``scale``, the aspect ratio
    log-uniform in ``ratio``, the crop must fit in the image; ten candidates are drawn per sample and the first that
    fits wins, else a centre crop with the ratio clamped into ``ratio``. Crop, bilinear resize (``align_corners=False``
    convention, no antialiasing, border pixels replicated) and flip run in one ``grid_sample`` call for the batch.
    Colour jitter follows torchvision's ``ColorJitter`` ranges (factors uniform in ``[max(0, 1 - b), 1 + b]``, hue
    shift uniform in ``[-hue, hue]``) in the fixed order brightness, contrast, saturation, hue, applied to each sample
    with probability ``jitter_prob``; see NOTE [ Hue as a rotation about the gray axis ] for how it is computed.

    Args:
        size: Output size, ``int`` or ``(height, width)``.
        scale: Range of the crop's area fraction, ``0 < lo <= hi <= 1``.
        ratio: Range of the crop's aspect ratio (width / height), ``0 < lo <= hi``.
        flip: Probability of a horizontal flip.
        brightness: Brightness jitter magnitude ``b >= 0``.
        contrast: Contrast jitter magnitude ``>= 0``.
        saturation: Saturation jitter magnitude ``>= 0``.
        hue: Hue jitter magnitude in ``[0, 0.5]`` (turns).
        jitter_prob: Probability that a sample is colour-jittered.
        mean: Per-channel mean in ``[0, 1]`` units (e.g. ImageNet's), or None for no normalisation.
        std: Per-channel standard deviation, given together with ``mean``.
        out_dtype: Floating point dtype of the output.
        channels_last: Return the output in ``torch.channels_last`` memory format.
        seed: Seed of the augmenter's own generator, used when ``__call__`` gets no ``generator``.

    Note:
        ``strength`` in ``[0, 1]`` scales the augmentation: flip and jitter probabilities and jitter magnitudes are
        multiplied by it, the area range moves linearly toward ``(1, 1)`` and the log aspect-ratio range toward the
        image's own aspect ratio. ``strength=0`` is a plain resize of the whole image, without flip or jitter.

    Note:
        Without ``generator=``, calls draw from the augmenter's own generator, which ``state_dict()`` saves and
        pickling carries along: copies sent to several worker processes would draw the same parameters. Pass a
        per-batch generator (as the loader does) whenever more than one process augments.

    Note:
        Single-channel (grayscale) input is supported: saturation and hue jitter are no-ops on it. Colour jitter on
        inputs with other than 1 or 3 channels raises ``ValueError``.

    Example:
        >>> aug = GpuAugment(224, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
        ...                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        >>> x = torch.randint(0, 256, (8, 3, 256, 256), dtype=torch.uint8)
        >>> aug(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 224, 224])
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        jitter_prob: float = 0.8,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        out_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        seed: int = 0,
    ) -> None:
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if (
            not isinstance(size, Sequence)
            or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) for s in size)
        ):
            raise TypeError(f"size should be an int or a pair of ints (height, width), got size={size!r}")
        if min(size) <= 0:
            raise ValueError(f"size should be positive, got size={tuple(size)}")
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.scale = _check_range("scale", scale, high=1.0)
        self.ratio = _check_range("ratio", ratio, high=math.inf)
        self.flip = _check_prob("flip", flip)
        self.brightness = _check_nonneg("brightness", brightness)
        self.contrast = _check_nonneg("contrast", contrast)
        self.saturation = _check_nonneg("saturation", saturation)
        self.hue = _check_nonneg("hue", hue, high=0.5)
        self.jitter_prob = _check_prob("jitter_prob", jitter_prob)
        self.mean = _check_stats("mean", mean)
        self.std = _check_stats("std", std)
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"mean and std should be given together, got mean={mean!r}, std={std!r}")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(
                    f"mean and std should have the same length, got len(mean)={len(self.mean)}, "
                    f"len(std)={len(self.std)}"
                )
            if min(self.std) <= 0:
                raise ValueError(f"std should be positive, got std={self.std}")
        if not isinstance(out_dtype, torch.dtype):
            raise TypeError(f"out_dtype should be a torch.dtype, got out_dtype={out_dtype!r}")
        if not out_dtype.is_floating_point:
            raise ValueError(f"out_dtype should be a floating point dtype, got out_dtype={out_dtype}")
        self.out_dtype = out_dtype
        if not isinstance(channels_last, bool):
            raise TypeError(f"channels_last should be a bool, got channels_last={channels_last!r}")
        self.channels_last = channels_last
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed should be an int, got seed={seed!r}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed should be in [0, 2**64), got seed={seed}")
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._consts: dict[torch.device, dict[str, Tensor]] = {}
        self._scratch: _Scratch | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, flip={self.flip}, "
            f"brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}, hue={self.hue}, "
            f"jitter_prob={self.jitter_prob}, mean={self.mean}, std={self.std}, out_dtype={self.out_dtype}, "
            f"channels_last={self.channels_last}, seed={self.seed})"
        )

    # ----------------------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """The seed and the own generator's state (None until the generator is first used)."""
        g = self._generator
        return {
            _SEED: self.seed,
            _GEN_STATE: None if g is None else g.get_state(),
            _GEN_DEVICE: None if g is None else str(g.device),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        missing = {_SEED, _GEN_STATE, _GEN_DEVICE} - set(state)
        if missing:
            keys = sorted([_SEED, _GEN_STATE, _GEN_DEVICE])
            raise ValueError(f"state should have keys {keys}, got state missing {sorted(missing)}")
        self.seed = int(state[_SEED])
        if state[_GEN_STATE] is None:
            self._generator = None
        else:
            g = torch.Generator(device=state[_GEN_DEVICE])
            g.set_state(state[_GEN_STATE])
            self._generator = g

    def _own_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        elif self._generator.device.type != device.type:
            raise ValueError(
                f"GpuAugment's own generator lives on {self._generator.device} but the input is on {device}; "
                f"pass generator= explicitly"
            )
        return self._generator

    # ------------------------------------------------------------------------------------------------------ draw

    def draw(
        self,
        batch_size: int,
        heights: int | Tensor,
        widths: int | Tensor,
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        strength: float = 1.0,
    ) -> AugmentParams:
        """Draw the parameters for a batch, on ``device`` with ``generator``.

        Args:
            batch_size: Number of samples ``B``.
            heights: Height of every image (``int``) or of each one (``(B,)`` tensor on ``device``).
            widths: Width of every image (``int``) or of each one (``(B,)`` tensor on ``device``).
            generator: Source of randomness; must live on ``device``.
            device: Device of the parameters; defaults to ``generator.device``.
            strength: Augmentation strength in ``[0, 1]`` (see the class docstring).

        Returns:
            The drawn :class:`AugmentParams`.
        """
        s = _check_strength(strength)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size should be an int, got batch_size={batch_size!r}")
        if batch_size < 0:
            raise ValueError(f"batch_size should be >= 0, got batch_size={batch_size}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator should be a torch.Generator, got generator={generator!r}")
        device = generator.device if device is None else torch.device(device)
        if device.type != generator.device.type:
            raise ValueError(
                f"generator should live on the parameters' device {device}, got generator.device={generator.device}"
            )
        n = batch_size
        f32 = torch.float32
        h_img = self._sizes("heights", heights, n, device)
        w_img = self._sizes("widths", widths, n, device)
        u = torch.rand((n, _NUM_UNIFORMS), generator=generator, device=device, dtype=f32)
        t = _NUM_TRIES
        u_area, u_ratio = u[:, :t], u[:, t : 2 * t]
        u_x, u_y, u_flip, u_jit = u[:, 2 * t], u[:, 2 * t + 1], u[:, 2 * t + 2], u[:, 2 * t + 3]
        u_fac = u[:, 2 * t + 4 : 2 * t + 8]

        # Random resized crop, strength-scaled: area range -> (1, 1), log-ratio range -> the image's own ratio.
        s_lo = 1.0 - s * (1.0 - self.scale[0])
        s_hi = 1.0 - s * (1.0 - self.scale[1])
        log_img = torch.log(w_img / h_img)
        log_r0 = log_img * (1.0 - s) + s * math.log(self.ratio[0])
        log_r1 = log_img * (1.0 - s) + s * math.log(self.ratio[1])
        area = (h_img * w_img).unsqueeze(1) * (s_lo + (s_hi - s_lo) * u_area)
        aspect = torch.exp(log_r0.unsqueeze(1) + (log_r1 - log_r0).unsqueeze(1) * u_ratio)
        cw = torch.round(torch.sqrt(area * aspect))
        ch = torch.round(torch.sqrt(area / aspect))
        fits = (cw > 0) & (cw <= w_img.unsqueeze(1)) & (ch > 0) & (ch <= h_img.unsqueeze(1))
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first candidate that fits
        any_fits = fits.any(dim=1)
        cw = cw.gather(1, first).squeeze(1)
        ch = ch.gather(1, first).squeeze(1)
        # torchvision's fallback: whole image, ratio clamped into the range, centred.
        r_min, r_max = torch.exp(log_r0), torch.exp(log_r1)
        in_ratio = w_img / h_img
        too_tall, too_wide = in_ratio < r_min, in_ratio > r_max
        fw = torch.where(too_wide, torch.round(h_img * r_max), w_img)
        fh = torch.where(too_tall, torch.round(w_img / r_min), h_img)
        fw, fh = torch.minimum(fw, w_img), torch.minimum(fh, h_img)
        cw = torch.where(any_fits, cw, fw)
        ch = torch.where(any_fits, ch, fh)
        x1 = torch.where(
            any_fits,
            torch.minimum(torch.floor(u_x * (w_img - cw + 1.0)), w_img - cw),
            torch.floor((w_img - cw) * 0.5),
        )
        y1 = torch.where(
            any_fits,
            torch.minimum(torch.floor(u_y * (h_img - ch + 1.0)), h_img - ch),
            torch.floor((h_img - ch) * 0.5),
        )
        boxes = torch.stack((x1, y1, x1 + cw, y1 + ch), dim=1)

        flip = u_flip < self.flip * s
        jitter_p = self.jitter_prob * s if self._jitter_active(s) else 0.0
        jitter = u_jit < jitter_p
        factors = []
        for j, mag in enumerate((self.brightness, self.contrast, self.saturation)):
            lo, hi = max(0.0, 1.0 - mag * s), 1.0 + mag * s
            factors.append(torch.where(jitter, lo + (hi - lo) * u_fac[:, j], 1.0))
        hue = torch.where(jitter, (2.0 * u_fac[:, 3] - 1.0) * (self.hue * s), 0.0)
        return AugmentParams(boxes, flip, jitter, factors[0], factors[1], factors[2], hue)

    def _jitter_active(self, strength: float) -> bool:
        mags = (self.brightness, self.contrast, self.saturation, self.hue)
        return strength > 0 and self.jitter_prob > 0 and any(m > 0 for m in mags)

    @staticmethod
    def _sizes(name: str, value: int | Tensor, n: int, device: torch.device) -> Tensor:
        if isinstance(value, Tensor):
            if value.shape != (n,):
                raise ValueError(f"{name} should have shape ({n},), got {name}.shape={tuple(value.shape)}")
            if value.device.type != device.type:
                raise ValueError(f"{name} should be on {device}, got {name}.device={value.device}")
            return value.to(torch.float32)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} should be an int or a ({n},) tensor, got {name}={value!r}")
        if value <= 0:
            raise ValueError(f"{name} should be positive, got {name}={value}")
        return torch.full((n,), float(value), device=device, dtype=torch.float32)

    # ----------------------------------------------------------------------------------------------------- apply

    def apply(self, x: Tensor | Sequence[Tensor], params: AugmentParams) -> Tensor:
        """Apply drawn parameters to a batch; deterministic.

        Args:
            x: ``(B, C, H, W)`` uint8 or float (in ``[0, 1]``) tensor, or a list of ``(C, H_i, W_i)`` tensors.
            params: Parameters from :meth:`draw`, on ``x``'s device.

        Returns:
            ``(B, C, *size)`` tensor of dtype ``out_dtype``.
        """
        batch, _, unit = self._as_batch(x)
        return self._apply(batch, params, unit)

    def __call__(
        self,
        x: Tensor | Sequence[Tensor],
        *,
        generator: torch.Generator | None = None,
        strength: float = 1.0,
    ) -> Tensor:
        """Draw parameters with ``generator`` (default: the augmenter's own) and apply them.

        Args:
            x: ``(B, C, H, W)`` uint8 or float (in ``[0, 1]``) tensor, or a list of ``(C, H_i, W_i)`` tensors of
                possibly different sizes (as GPU JPEG decoding yields).
            generator: Generator on ``x``'s device; None uses the augmenter's own, seeded from ``seed``.
            strength: Augmentation strength in ``[0, 1]``.

        Returns:
            ``(B, C, *size)`` tensor of dtype ``out_dtype``.
        """
        batch, sizes, unit = self._as_batch(x)
        if generator is None:
            generator = self._own_generator(batch.device)
        n, _, h, w = batch.shape
        heights, widths = (h, w) if sizes is None else sizes
        params = self.draw(n, heights, widths, generator=generator, device=batch.device, strength=strength)
        return self._apply(batch, params, unit)

    def _as_batch(self, x: Tensor | Sequence[Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor] | None, float]:
        """A ``(B, C, H, W)`` tensor, each image's (heights, widths) for a list input, and the pixel unit.

        The unit is 1/255 for uint8 images (which stay in 0..255 until the colour stage), else 1.
        """
        if isinstance(x, Tensor):
            if x.ndim != 4:
                raise ValueError(f"x should be a (B, C, H, W) tensor, got x.shape={tuple(x.shape)}")
            self._check_dtype(x)
            return x, None, (1.0 / 255.0 if x.dtype == torch.uint8 else 1.0)
        if not isinstance(x, Sequence) or len(x) == 0 or not all(isinstance(t, Tensor) for t in x):
            raise TypeError(f"x should be a tensor or a non-empty list of (C, H, W) tensors, got x={type(x).__name__}")
        first = x[0]
        for i, t in enumerate(x):
            if t.ndim != 3 or t.shape[0] != first.shape[0] or t.dtype != first.dtype or t.device != first.device:
                raise ValueError(
                    f"x should be a list of (C, H, W) tensors with the same C, dtype and device, got x[{i}] of "
                    f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device} and x[0] of shape "
                    f"{tuple(first.shape)}, dtype {first.dtype}, device {first.device}"
                )
            self._check_dtype(t)
        hs = [t.shape[1] for t in x]
        ws = [t.shape[2] for t in x]
        dtype = torch.float32 if first.dtype == torch.uint8 else first.dtype
        # Zero padding is never sampled: the resampling grid is clamped to each crop's own pixels.
        batch = torch.zeros((len(x), first.shape[0], max(hs), max(ws)), dtype=dtype, device=first.device)
        for i, t in enumerate(x):  # one copy per image: the list itself is per-sample
            batch[i, :, : t.shape[1], : t.shape[2]].copy_(t)
        sizes = _to_device_async([hs, ws], first.device)
        return batch, (sizes[0], sizes[1]), (1.0 / 255.0 if first.dtype == torch.uint8 else 1.0)

    @staticmethod
    def _check_dtype(x: Tensor) -> None:
        if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
            raise TypeError(f"x should be uint8 or floating point, got x.dtype={x.dtype}")

    def _const(self, device: torch.device) -> dict[str, Tensor]:
        consts = self._consts.get(device)
        if consts is None:
            hue_bases = _to_device_async(_HUE_BASES, device)
            consts = {
                "gray": _to_device_async(_GRAY, device),
                "hue0": hue_bases[0],
                "hue1": hue_bases[1],
                "hue2": hue_bases[2],
            }
            if self.mean is not None and self.std is not None:
                consts["mean"] = _to_device_async(self.mean, device)
                consts["std"] = _to_device_async(self.std, device)
            self._consts[device] = consts
        return consts

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A scratch tensor; reused between calls on the CPU, see NOTE [ Scratch buffers on the CPU ]."""
        if device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        if self._scratch is None:
            self._scratch = _Scratch()
        return self._scratch.get(name, shape, dtype)

    def _apply(self, x: Tensor, params: AugmentParams, unit: float) -> Tensor:
        n, c, _, _ = x.shape
        oh, ow = self.size
        if not isinstance(params, AugmentParams):
            raise TypeError(f"params should be AugmentParams, got params={type(params).__name__}")
        if len(params) != n:
            raise ValueError(f"params should be drawn for the batch size {n}, got len(params)={len(params)}")
        if params.boxes.device != x.device:
            raise ValueError(
                f"params should be on x's device {x.device}, got params.boxes.device={params.boxes.device}"
            )
        if self.mean is not None and len(self.mean) not in (1, c):
            raise ValueError(f"mean and std should have 1 or C={c} values, got len(mean)={len(self.mean)}")
        jitter_on = self._jitter_active(1.0)
        if jitter_on and c not in (1, 3):
            raise ValueError(f"colour jitter needs 1 or 3 channels, got x.shape={tuple(x.shape)}")
        dev = x.device
        if x.dtype in (torch.uint8, torch.float16, torch.bfloat16):
            x = self._buffer("input", tuple(x.shape), torch.float32, dev).copy_(x)
        grid = self._buffer("grid", (n, oh, ow, 2), x.dtype, dev)
        # The only fresh full-size tensor: grid_sample has no fast out= variant, so its output is what we return.
        out = _crop_resize_flip_grid(x, params, self.size, grid=grid)
        if out.dtype == self.out_dtype and not self.channels_last:
            result = out
        else:
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            result = torch.empty((n, c, oh, ow), dtype=self.out_dtype, device=dev, memory_format=fmt)
        consts = self._const(dev)
        if jitter_on:
            self._colour(out, params, consts, unit, result)
        else:
            self._normalise(out, consts, unit, result)
        return result

    def _normalise(self, out: Tensor, consts: dict[str, Tensor], unit: float, result: Tensor) -> None:
        if self.mean is None:
            if unit != 1.0:
                torch.mul(out, unit, out=result)
            elif result is not out:
                result.copy_(out)
            return
        inv_std = 1.0 / consts["std"].to(out.dtype)
        scale = (inv_std * unit).view(1, -1, 1, 1)
        shift = (-consts["mean"].to(out.dtype) * inv_std).view(1, -1, 1, 1)
        torch.addcmul(shift, out, scale, out=result)

    def _colour(
        self, out: Tensor, params: AugmentParams, consts: dict[str, Tensor], unit: float, result: Tensor
    ) -> None:
        """Jitter and normalise as one per-sample affine colour map.

        See NOTE [ Hue as a rotation about the gray axis ].
        """
        n, c, oh, ow = out.shape
        dt = out.dtype
        b = params.brightness.to(dt)
        k = params.contrast.to(dt)
        flat = out.view(n, c, oh * ow)
        if c == 3:
            gray = consts["gray"].to(dt)
            # Contrast blends with the mean gray level of the brightness-adjusted image: b * mean(gray(x)).
            mean_gray = (flat.mean(dim=2) @ gray) * unit if self.contrast > 0 else torch.zeros_like(b)
            sat = params.saturation.to(dt).view(n, 1, 1)
            eye = torch.eye(3, dtype=dt, device=out.device)
            mat = sat * eye + (1.0 - sat) * gray.view(1, 1, 3)  # saturation: blend with gray(x); rows = channels
            if self.hue > 0:
                theta = params.hue.to(dt) * (2.0 * math.pi)
                rot = (
                    consts["hue0"].to(dt)
                    + torch.cos(theta).view(n, 1, 1) * consts["hue1"].to(dt)
                    + torch.sin(theta).view(n, 1, 1) * consts["hue2"].to(dt)
                )
                mat = rot @ mat
            bias = mat.sum(dim=2) * ((1.0 - k) * b * mean_gray).view(n, 1)  # mat @ (offset * ones)
            mat = mat * (b * k * unit).view(n, 1, 1)
        else:  # grayscale: saturation and hue are no-ops
            mean_gray = flat.mean(dim=(1, 2)) * unit if self.contrast > 0 else torch.zeros_like(b)
            mat = (b * k * unit).view(n, 1, 1)
            bias = ((1.0 - k) * b * mean_gray).view(n, 1)
        bounds = [(0.0, 1.0)] * c
        if self.mean is not None and self.std is not None:
            means = self.mean * c if len(self.mean) == 1 else self.mean
            stds = self.std * c if len(self.std) == 1 else self.std
            bounds = [(-m / s, (1.0 - m) / s) for m, s in zip(means, stds)]
            inv_std = (1.0 / consts["std"].to(dt)).expand(c)
            mat = mat * inv_std.view(1, c, 1)
            bias = (bias - consts["mean"].to(dt).expand(c)) * inv_std
        tmp = self._buffer("colour", (n, c, oh * ow), dt, out.device)
        torch.bmm(mat, flat, out=tmp)
        tmp.add_(bias.unsqueeze(2))
        tmp4 = tmp.view(n, c, oh, ow)
        for ch, (lo, hi) in enumerate(bounds):  # per channel, with host-side bounds: no loop over samples
            if result.dtype == dt:
                torch.clamp(tmp4[:, ch], lo, hi, out=result[:, ch])
            else:
                tmp4[:, ch].clamp_(lo, hi)
        if result.dtype != dt:
            result.copy_(tmp4)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_scratch"] = None
        state["_consts"] = {}
        state["_generator"] = None
        state["_generator_state"] = self.state_dict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.pop("_generator_state")
        self.__dict__.update(state)
        self.load_state_dict(saved)


# NOTE [ Scratch buffers on the CPU ]
# On these CPUs a fresh multi-MB tensor costs page faults on every call (glibc gives each its own mapping): a fresh
# 64x3x256x256 uint8->float conversion took 15 ms against 1.2 ms into a reused buffer. On the CPU, GpuAugment
# therefore keeps its intermediates (float copy of the input, sampling grid, colour-map output) in per-thread scratch
# buffers that live as long as the augmenter (about 2 x the float size of one batch). The tensor it returns is always
# fresh, never a reused buffer. On CUDA the caching allocator already recycles memory, so no scratch is kept.


class _Scratch(threading.local):
    """Per-thread named scratch tensors, reallocated when the shape or dtype changes."""

    def __init__(self) -> None:
        self.buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        buf = self.buffers.get(name)
        if buf is None or tuple(buf.shape) != shape or buf.dtype != dtype:
            buf = self.buffers[name] = torch.empty(shape, dtype=dtype)
        return buf


def _unit_centres(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Centres of ``n`` equal bins of [0, 1]: (k + 0.5) / n."""
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) / n


def _crop_resize_flip_grid(
    x: Tensor, params: AugmentParams, size: tuple[int, int], *, grid: Tensor | None = None
) -> Tensor:
    """Crop every box, resize it bilinearly to ``size`` and flip where asked, in one ``grid_sample`` call.

    Equals cropping (slicing) then ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` then
    flipping: the sample points are clamped to each crop's own pixel centres, so neither the pixels around the crop
    nor the padding of a batch of different-sized images leak in. ``grid`` is an optional ``(B, *size, 2)`` buffer.
    """
    n, _, h_pad, w_pad = x.shape
    oh, ow = size
    dt = x.dtype
    boxes = params.boxes.to(dt)
    x1, y1, x2, y2 = boxes.unbind(1)
    u = _unit_centres(ow, x.device, dt)
    v = _unit_centres(oh, x.device, dt)
    u = torch.where(params.flip.unsqueeze(1), u.flip(0), u)  # (B, ow); mirrored exactly for flipped samples
    xs = x1.unsqueeze(1) + u * (x2 - x1).unsqueeze(1)
    ys = y1.unsqueeze(1) + v * (y2 - y1).unsqueeze(1)
    xs = torch.minimum(torch.maximum(xs, (x1 + 0.5).unsqueeze(1)), (x2 - 0.5).unsqueeze(1))
    ys = torch.minimum(torch.maximum(ys, (y1 + 0.5).unsqueeze(1)), (y2 - 0.5).unsqueeze(1))
    if grid is None:
        grid = torch.empty((n, oh, ow, 2), dtype=dt, device=x.device)
    grid[..., 0].copy_((xs * (2.0 / w_pad) - 1.0).view(n, 1, ow))
    grid[..., 1].copy_((ys * (2.0 / h_pad) - 1.0).view(n, oh, 1))
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crop_resize_flip_roi(x: Tensor, params: AugmentParams, size: tuple[int, int]) -> Tensor:
    """The ``torchvision.ops.roi_align`` alternative to :func:`_crop_resize_flip_grid`, kept for the benchmark.

    One bilinear sample per output pixel (``sampling_ratio=1``, ``aligned=True``), then a vectorised flip. Unlike the
    grid version, pixels just outside the crop (and padding) contribute at the crop's border.
    """
    from torchvision.ops import roi_align

    n = x.shape[0]
    idx = torch.arange(n, device=x.device, dtype=x.dtype).unsqueeze(1)
    rois = torch.cat((idx, params.boxes.to(x.dtype)), dim=1)
    out = roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return torch.where(params.flip.view(n, 1, 1, 1), out.flip(-1), out)


# NOTE [ Kornia and the global RNG ]
# Kornia augmentations draw their parameters from torch's *global* RNG and take no generator. To keep runs
# reproducible under our explicit generators, apply_augment draws a seed from the caller's generator, then runs the
# Kornia module inside `torch.random.fork_rng`, which saves the CPU RNG (and the RNG of the input's CUDA device) and
# restores it on exit, after seeding exactly those RNGs with the drawn seed. This is the only place in enlight_data
# that touches global RNG state, and it leaves it as it found it. Drawing the seed from a CUDA generator costs one
# device-to-host copy per call; Kornia itself synchronises far more often than that.


def _is_kornia_augmentation(obj: object) -> bool:
    try:
        import kornia.augmentation as ka
        from kornia.augmentation.base import _BasicAugmentationBase
    except ImportError:  # pragma: no cover - kornia is a dependency
        return False
    return isinstance(obj, (_BasicAugmentationBase, ka.ImageSequential, ka.AugmentationSequential))


def _host_seed(generator: torch.Generator) -> int:
    """A seed for Kornia's global-RNG draws, taken from ``generator`` without a device sync.

    A CPU generator is drawn from. A CUDA generator is read on the host (its seed and
    Philox offset) and advanced by one Philox step, so each call gets a fresh seed and
    nothing waits for the GPU.
    """
    if generator.device.type == "cpu":
        return int(torch.randint(0, 2**62, (1,), generator=generator))
    offset = generator.get_offset()
    generator.set_offset(offset + 4)
    return derive_seed(generator.initial_seed(), offset)


def apply_augment(
    augment: GpuAugment | Callable[[Tensor], Tensor],
    x: Tensor | Sequence[Tensor],
    *,
    generator: torch.Generator,
    strength: float = 1.0,
) -> Tensor:
    """Run an augmentation on a batch, reproducibly under ``generator``; the loader's single entry point.

    Args:
        augment: A :class:`GpuAugment` (called with ``generator`` and ``strength``), a Kornia augmentation or
            augmentation container (uint8 input is converted to float in ``[0, 1]``; run under a seed drawn from
            ``generator``, see NOTE [ Kornia and the global RNG ]), or any other callable (called as ``augment(x)``).
        x: The batch.
        generator: Source of randomness for this batch.
        strength: Augmentation strength in ``[0, 1]``; only :class:`GpuAugment` uses it.

    Returns:
        The augmented batch.

    Raises:
        TypeError: If ``augment`` is not callable or ``generator`` is not a ``torch.Generator``.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator should be a torch.Generator, got generator={generator!r}")
    _check_strength(strength)
    if isinstance(augment, GpuAugment):
        return augment(x, generator=generator, strength=strength)
    if not callable(augment):
        raise TypeError(
            f"augment should be a GpuAugment, a Kornia augmentation or a callable, got augment={augment!r}"
        )
    if _is_kornia_augmentation(augment):
        if not isinstance(x, Tensor):
            raise TypeError(f"a Kornia augmentation needs a (B, C, H, W) tensor, got x={type(x).__name__}")
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        seed = _host_seed(generator)
        cuda = x.device.type == "cuda"
        with torch.random.fork_rng(devices=[x.device] if cuda else [], device_type="cuda"):
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(x.device):
                    torch.cuda.manual_seed(seed)
            return augment(x)
    return augment(x)
