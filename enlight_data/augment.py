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

import functools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from numbers import Integral, Real
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _fused
from ._inference import normal_tensors
from ._rng import derive_seed
from ._validate import (
    channels_last_hint, check_bool, check_device, check_int, check_no_grad, check_pixel_edges, check_seed,
)

__all__ = ["AugmentParams", "GpuAugment", "apply_augment"]

# Number of (area, aspect ratio) candidates drawn per sample, as in torchvision's RandomResizedCrop.
_NUM_TRIES = 10
# Uniforms per sample: T areas, T log-ratios, x offset, y offset, flip, jitter applied, 3 factors, hue shift.
_NUM_UNIFORMS = 2 * _NUM_TRIES + 8

# ITU-R 601-2 luma weights, the ones torchvision's rgb_to_grayscale uses.
_GRAY = (0.2989, 0.587, 0.114)
# The colour operations of a jitter, in the order they are applied.
_COLOUR_OPS = ("brightness", "contrast", "saturation", "hue")
# Jitter constants are cached per (device, strength); past this many strengths the cache starts over.
_MAX_CACHED_STRENGTHS = 16

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
# uniformly random colours and a 0.1 turn shift, the mean distance between the two results is about half the
# mean change either one makes (0.45-0.55, measured with the rotation clamped to [0, 1] or not). Brightness,
# contrast and saturation match torchvision exactly when nothing clips.
# (A rotation of the I/Q plane of YIQ, another common choice, turns red the wrong way and spaces primaries unevenly.)
# Being linear, the hue rotation composes with brightness, contrast and saturation (also linear per sample, the
# contrast mean being computed from the image) and with normalisation into ONE per-sample affine colour map
# `y = M x + c`, applied with one batched matmul and one clamp. The price: torchvision clamps to [0, 1] after every
# jitter step, we clamp once at the end (before normalising, folded into per-channel bounds).

# NOTE [ Few kernels per draw ]
# On a GPU every tensor op is a kernel launch of a few microseconds of host time, and a batch of 256 images at 224 px
# is only a few hundred microseconds of memory traffic: a pipeline of 150 small ops is launch-bound. So a call keeps
# its op count low (about 45 ops to draw and 30 to apply, with jitter; tests/test_augment.py counts them with a
# dispatch mode and holds a budget): image-level terms of a batch of one size are host floats, constants (pixel
# centres, jitter ranges, colour bases, clamp bounds) are made once per device and cached, the four jitter factors
# are one fused multiply-add, and the colour map is applied in one baddbmm and one clamp on the CPU, one fused kernel
# on CUDA (NOTE [ Fused colour map ], NOTE [ Applying the colour map ]). An H200 profile still showed a call bound by
# the host's launches (1.06 ms per call pipelined for 0.69 ms of kernels, 77 launches), so on CUDA, for a batch of
# one image size, the whole draw runs as one Triton kernel after the one `torch.rand` (`_draw_kernel.py`): it reads
# the same uniforms in the same way and gives the same parameters up to float rounding. Lists of differently sized
# images keep the PyTorch draw. With crop, resize and flip fused too (NOTE [ Resampling in one kernel ]), a jittered
# call on CUDA is about 18 launches and an unjittered one 3 (tests/test_triton_kernels.py counts them).

# NOTE [ Fused colour map ]
# Every step of the jitter is linear per sample, so the map is built from per-sample scalars with a few tiny ops and
# applied to the pixels in one pass plus a clamp (per-channel bounds as tensors; NOTE [ Applying the colour map ]).
# Since the hue rotation R keeps gray, R 1 = 1, so R S(sat) = sat R + (1 - sat) 1 g^T with g the luma weights, and
# R = H0 + cos H1 + sin H2: the matrix is (sat, sat cos, sat sin, 1 - sat) times four constant matrices (I and 1 g^T
# without hue), one small matmul. Brightness b and contrast k scale it by b k; normalisation (1/std per output
# channel, and the pixel unit) is folded into the constants; the contrast offset (1 - k) b mean_gray enters through
# the matrix' row sums, which the same matmul returns.
_R3 = 1.0 / math.sqrt(3.0)
_HUE_BASES = (
    ((1 / 3, 1 / 3, 1 / 3), (1 / 3, 1 / 3, 1 / 3), (1 / 3, 1 / 3, 1 / 3)),
    ((2 / 3, -1 / 3, -1 / 3), (-1 / 3, 2 / 3, -1 / 3), (-1 / 3, -1 / 3, 2 / 3)),
    ((0.0, -_R3, _R3), (_R3, 0.0, -_R3), (-_R3, _R3, 0.0)),
)


@dataclass(frozen=True, eq=False)  # tensors have no truth value: equality (and hash) by identity
class AugmentParams:
    """Per-sample parameters drawn by :meth:`GpuAugment.draw`; all tensors share one device.

    Attributes:
        boxes: ``(B, 4)`` float32 crop boxes ``(x1, y1, x2, y2)`` in pixel-edge coordinates of each sample's own
            image (integer-valued; the crop covers pixels ``x1 .. x2 - 1``).
        flip: ``(B,)`` bool, horizontal flip.
        jitter: ``(B,)`` bool, whether colour jitter was drawn for each sample: a record of the draw, which
            :meth:`GpuAugment.apply` does not read (it applies the factors below as they are, so parameters built
            by hand give a sample without jitter identity factors).
        brightness: ``(B,)`` float32 brightness factors (1 where ``jitter`` is False).
        contrast: ``(B,)`` float32 contrast factors (1 where ``jitter`` is False).
        saturation: ``(B,)`` float32 saturation factors (1 where ``jitter`` is False).
        hue: ``(B,)`` float32 hue shifts in turns, in ``[-0.5, 0.5]`` (0 where ``jitter`` is False).
        colour_ops: The colour operations whose factors may differ from the identity, a tuple among
            ``("brightness", "contrast", "saturation", "hue")`` in that order (any collection is accepted and put
            in it); ``()``: no colour step, only the normalisation. :meth:`GpuAugment.apply` runs the colour step
            when it is not empty, and then skips the contrast offset (a mean over each image) and the hue rotation
            when they are not named: name every operation whose factors are not the identity (brightness and
            saturation factors are applied whenever the colour step runs). :meth:`GpuAugment.draw` sets it from its
            magnitudes. ``None`` (the default, for parameters built by hand): all four on 1- and 3-channel batches,
            none on other channel counts, which have no colour jitter.

    Raises:
        TypeError: If a field is not a tensor, or of the wrong dtype (bool flags, floating-point values), or
            ``colour_ops`` is not ``None`` or a collection of strings.
        ValueError: If the shapes disagree (``(B, 4)`` boxes, ``(B,)`` for the rest) or the devices differ, or
            ``colour_ops`` names an unknown operation. The tensors' values are not checked (that would synchronise
            a GPU).
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    colour_ops: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        ops = self.colour_ops
        if ops is not None:
            if not isinstance(ops, (set, frozenset, tuple, list)) or not all(isinstance(o, str) for o in ops):
                raise TypeError(
                    f"colour_ops should be None or a collection of strings among {_COLOUR_OPS}, got colour_ops={ops!r}"
                )
            if not set(ops) <= set(_COLOUR_OPS):
                raise ValueError(
                    f"colour_ops should name operations among {_COLOUR_OPS}, got colour_ops={sorted(ops)}"
                )
            # A tuple in a fixed order: hashable, comparable, and loadable with torch.load(weights_only=True).
            object.__setattr__(self, "colour_ops", tuple(op for op in _COLOUR_OPS if op in ops))
        # Metadata only (no value is read): a few microseconds per batch, no device sync.
        for f in _tensor_fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, Tensor):
                raise TypeError(f"{f.name} should be a Tensor, got {f.name} of type {type(value).__name__}")
            flag = f.name in ("flip", "jitter")
            if (value.dtype == torch.bool) != flag or not (flag or value.is_floating_point()):
                expected = "a bool tensor" if flag else "a floating-point tensor"
                raise TypeError(f"{f.name} should be {expected}, got {f.name} of dtype {value.dtype}")
        n = self.boxes.shape[0] if self.boxes.dim() else -1
        for f in _tensor_fields(self):
            value = getattr(self, f.name)
            shape = (n, 4) if f.name == "boxes" else (n,)
            if tuple(value.shape) != shape or value.device != self.boxes.device:
                raise ValueError(
                    f"{f.name} should have shape {shape if n >= 0 else '(B, 4)'} and boxes' device "
                    f"{self.boxes.device}, got {f.name} of shape {tuple(value.shape)} on {value.device}"
                )

    def to(self, device: torch.device | str) -> AugmentParams:
        """Return a copy with every tensor moved to ``device``.

        Args:
            device: Where to move the parameters (that of the batch they are applied to).

        Returns:
            A new :class:`AugmentParams` on ``device`` (the same ``colour_ops``).
        """
        moved = {f.name: getattr(self, f.name).to(device) for f in _tensor_fields(self)}
        return AugmentParams(**moved, colour_ops=self.colour_ops)

    def __getitem__(self, index: int | slice | Tensor) -> AugmentParams:
        """The parameters of the samples selected by ``index`` (an int keeps its batch dimension).

        Args:
            index: An int, a slice, or an integer tensor (0-dim or 1-D) or 1-D bool mask over the batch.

        Raises:
            IndexError: If an int is out of range.
            TypeError: If ``index`` is of another kind (a bool, ``None``, a tuple, a float or 2-D tensor).
        """
        if isinstance(index, Tensor):
            integer = not index.is_floating_point() and not index.is_complex() and index.dtype != torch.bool
            if not (index.dim() == 1 and (integer or index.dtype == torch.bool)) and not (index.dim() == 0 and integer):
                raise TypeError(
                    f"index should be an integer tensor (0-dim or 1-D) or a 1-D bool mask, got a {index.dim()}-D "
                    f"tensor of dtype {index.dtype}"
                )
            index = index.reshape(1) if index.dim() == 0 else index  # a one-sample batch, read without a host sync
        if isinstance(index, bool) or not isinstance(index, (Integral, slice, Tensor)):
            raise TypeError(f"index should be an int, a slice or a 1-D tensor, got index={index!r}")
        if isinstance(index, Integral):
            n, i = len(self), int(index)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for parameters of {n} samples")
            i %= n
            index = slice(i, i + 1)
        picked = {f.name: getattr(self, f.name)[index] for f in _tensor_fields(self)}
        return AugmentParams(**picked, colour_ops=self.colour_ops)

    def __len__(self) -> int:
        return self.boxes.shape[0]


def _tensor_fields(params: AugmentParams) -> tuple[Any, ...]:
    return tuple(f for f in fields(params) if f.name != "colour_ops")


def _check_prob(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{name} should be a real number in [0, 1], got {name}={value!r} of type {type(value).__name__}"
        )
    if not 0.0 <= float(value) <= 1.0:
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
    if not 0.0 < lo <= hi <= high or not math.isfinite(hi):
        bound = f" <= {high:g}" if math.isfinite(high) else " < inf"
        raise ValueError(f"{name} should satisfy 0 < lo <= hi{bound}, got {name}={tuple(value)}")
    return lo, hi


def _check_nonneg(name: str, value: Any, *, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} should be a real number, got {name}={value!r} of type {type(value).__name__}")
    if not 0.0 <= float(value) <= high or not math.isfinite(value):
        bound = f"[0, {high:g}]" if math.isfinite(high) else "[0, inf), finite"
        raise ValueError(f"{name} should be in {bound}, got {name}={value}")
    return float(value)


def _check_strength(strength: Any) -> float:
    return _check_prob("strength", strength)


def _check_stats(name: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (Tensor, np.ndarray)):  # e.g. torchvision's or timm's constants held as an array
        if value.ndim != 1:
            raise ValueError(f"{name} should be 1-D, one value per channel, got {name} of shape {tuple(value.shape)}")
        value = value.tolist()
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or any(isinstance(v, bool) or not isinstance(v, Real) for v in value)
    ):
        raise TypeError(f"{name} should be None or a non-empty sequence of real numbers, got {name}={value!r}")
    if len(value) == 0:
        raise ValueError(f"{name} should be None or a non-empty sequence of real numbers, got {name}={value!r}")
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"{name} should hold finite numbers, got {name}={tuple(value)}")
    return tuple(float(v) for v in value)


def _to_device_async(
    values: Sequence[float] | Sequence[Sequence[float]], device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """A small constant tensor on ``device`` without a synchronising host-to-device copy."""
    t = torch.tensor(values, dtype=dtype)
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
        mean: Per-channel mean in ``[0, 1]`` units (e.g. ImageNet's), or None for no normalisation: a sequence of
            numbers or a 1-D tensor or numpy array.
        std: Per-channel standard deviation in ``(0, 1]`` (``[0, 1]`` units), given together with ``mean``.
        out_dtype: Floating point dtype of the output (computed in float32, float64 for float64 input, also
            under ``torch.autocast``).
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
        The settings are read-only after construction (they feed constants cached per device); make a new
        ``GpuAugment`` to change one.

    Note:
        Single-channel (grayscale) input is supported: saturation and hue jitter are no-ops on it. Colour jitter on
        inputs with other than 1 or 3 channels raises ``ValueError``.

    Raises:
        TypeError: If a setting has the wrong type (ints for ``size`` and ``seed``, pairs of real numbers for
            ``scale`` and ``ratio``, real numbers for the rest, a ``torch.dtype`` for ``out_dtype``, a bool for
            ``channels_last``).
        ValueError: If a setting is out of range (a non-positive ``size``, a probability outside ``[0, 1]``, a
            negative jitter, ``hue`` above 0.5, an empty ``mean`` or ``std``, ``mean`` without ``std`` or of another
            length, a ``mean`` outside ``[0, 1]`` or a ``std`` outside ``(0, 1]`` (statistics on the 0-255 scale), a
            non-float ``out_dtype``).

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
        mean: Sequence[float] | Tensor | np.ndarray | None = None,
        std: Sequence[float] | Tensor | np.ndarray | None = None,
        out_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        seed: int = 0,
    ) -> None:
        given = size
        if isinstance(size, Integral) and not isinstance(size, bool):
            size = (size, size)
        if (
            not isinstance(size, Sequence)
            or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, Integral) for s in size)
        ):
            raise TypeError(f"size should be an int or a pair of ints (height, width), got size={size!r}")
        if min(size) <= 0:
            raise ValueError(f"size should be positive, got size={given!r}")
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
            # In [0, 1] units, as the pixels the colour stage normalises: ImageNet's statistics on the 0-255 scale
            # (123.675, ...; 58.395, ...) would crush every image into a sliver below -1.7.
            if not all(0.0 <= m <= 1.0 for m in self.mean) or max(self.std) > 1.0:
                raise ValueError(
                    f"mean and std should be in [0, 1] units (mean in [0, 1], std in (0, 1]), as the images are "
                    f"scaled to [0, 1] before normalising, got mean={self.mean}, std={self.std}; divide 0-255 "
                    f"statistics by 255"
                )
        if not isinstance(out_dtype, torch.dtype):
            raise TypeError(f"out_dtype should be a torch.dtype, got out_dtype={out_dtype!r}")
        if not out_dtype.is_floating_point:
            raise ValueError(f"out_dtype should be a floating point dtype, got out_dtype={out_dtype}")
        self.out_dtype = out_dtype
        self.channels_last = check_bool("channels_last", channels_last)
        self.seed = check_seed("seed", seed)
        self._generator: torch.Generator | None = None
        self._consts: dict[tuple[Any, ...], Any] = {}
        self._scratch: _Scratch | None = None
        self._frozen = True

    # Settings feed cached device constants (colour map, jitter ranges): changing one after construction would be
    # silently ignored by the caches, so they are read-only, like a frozen dataclass' fields.
    _SETTINGS = frozenset(
        ("size", "scale", "ratio", "flip", "brightness", "contrast", "saturation", "hue", "jitter_prob", "mean", "std",
         "out_dtype", "channels_last", "seed")
    )

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._SETTINGS and getattr(self, "_frozen", False):
            raise AttributeError(
                f"GpuAugment's settings are fixed at construction, got an assignment to {name}={value!r}; "
                f"make a new GpuAugment instead"
            )
        super().__setattr__(name, value)

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
        """Restore what :meth:`state_dict` returned: the own generator's state.

        The state is checked in full before anything changes. Its seed must be this augmenter's: the
        settings (the seed included) are fixed at construction, so a state saved by an augmenter with
        another seed is refused rather than changing the seed.

        Args:
            state: What :meth:`state_dict` returned.

        Raises:
            TypeError: If ``state`` is not a dict.
            ValueError: If a key is missing, the seed is not an int in ``[0, 2**64)`` or differs from
                this augmenter's, or the generator state is not a ``uint8`` tensor that a generator on
                the saved device (a device string) takes (both are ``None`` before first use).
            RuntimeError: If the saved generator's device is not available here (a CUDA state
                without CUDA).
        """
        if not isinstance(state, dict):
            raise TypeError(
                f"state should be a dict (from GpuAugment.state_dict()), got state of type {type(state).__name__}"
            )
        keys = sorted([_SEED, _GEN_STATE, _GEN_DEVICE])
        missing = sorted(set(keys) - set(state))
        if missing:
            raise ValueError(f"state should have keys {keys}, got state missing {missing}")
        seed = state[_SEED]
        if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= int(seed) < 2**64:
            raise ValueError(f"state[{_SEED!r}] should be an int in [0, 2**64), got state[{_SEED!r}]={seed!r:.80}")
        if int(seed) != self.seed:
            raise ValueError(
                f"state[{_SEED!r}] should be this augmenter's seed={self.seed} (settings are fixed at construction; "
                f"make a GpuAugment(seed={int(seed)}) to load it), got state[{_SEED!r}]={int(seed)}"
            )
        gen_state, gen_device = state[_GEN_STATE], state[_GEN_DEVICE]
        generator = None
        if (gen_state is None) != (gen_device is None):
            raise ValueError(
                f"state[{_GEN_STATE!r}] and state[{_GEN_DEVICE!r}] should both be None (the generator not used yet) "
                f"or both be set, got state[{_GEN_STATE!r}] of type {type(gen_state).__name__} and "
                f"state[{_GEN_DEVICE!r}]={gen_device!r:.80}"
            )
        if gen_state is not None:
            if not isinstance(gen_state, Tensor) or gen_state.dtype != torch.uint8 or gen_state.dim() != 1:
                got = (
                    f"a tensor of dtype {gen_state.dtype} and shape {tuple(gen_state.shape)}"
                    if isinstance(gen_state, Tensor)
                    else f"{gen_state!r:.80} of type {type(gen_state).__name__}"
                )
                raise ValueError(
                    f"state[{_GEN_STATE!r}] should be a 1-D uint8 tensor (torch.Generator.get_state()) or None, "
                    f"got {got}"
                )
            if not isinstance(gen_device, str):
                raise ValueError(
                    f"state[{_GEN_DEVICE!r}] should be a device string such as 'cpu' or 'cuda:0', got "
                    f"state[{_GEN_DEVICE!r}]={gen_device!r:.80} of type {type(gen_device).__name__}"
                )
            try:
                device = torch.device(gen_device)
            except RuntimeError as err:
                raise ValueError(
                    f"state[{_GEN_DEVICE!r}] should be a device string such as 'cpu' or 'cuda:0', got "
                    f"state[{_GEN_DEVICE!r}]={gen_device!r} ({err})"
                ) from None
            generator = torch.Generator(device=device)  # a CUDA state on a machine without CUDA fails here
            try:
                generator.set_state(gen_state)
            except RuntimeError as err:
                raise ValueError(
                    f"state[{_GEN_STATE!r}] should be the state of a {generator.device.type} generator, got a "
                    f"uint8 tensor of {gen_state.numel()} bytes ({err})"
                ) from None
        self._generator = generator

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
            heights: Height of every image (``int``) or of each one (``(B,)`` tensor on ``device``); positive
                (checked for ints and CPU tensors; a GPU tensor is not read back, so non-positive sizes there give
                empty boxes).
            widths: Width of every image (``int``) or of each one (``(B,)`` tensor on ``device``); positive.
            generator: Source of randomness; must live on ``device``.
            device: Device of the parameters; defaults to ``generator.device``.
            strength: Augmentation strength in ``[0, 1]`` (see the class docstring).

        Returns:
            The drawn :class:`AugmentParams`.

        Raises:
            TypeError: If ``batch_size`` is not an int, ``heights``/``widths`` neither an int nor a tensor,
                ``generator`` not a ``torch.Generator``, or ``strength`` not a real number.
            ValueError: If ``batch_size`` is negative, a size is not positive (or a size tensor has another shape
                or device), ``generator`` lives on another device than ``device``, or ``strength`` is outside
                ``[0, 1]``.
        """
        s = _check_strength(strength)
        batch_size = check_int("batch_size", batch_size, minimum=0)  # type: ignore[assignment]
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator should be a torch.Generator, got generator={generator!r}")
        device = generator.device if device is None else check_device("device", device)
        if device.type != generator.device.type:
            raise ValueError(
                f"generator should live on the parameters' device {device}, got generator.device={generator.device}"
            )
        n = batch_size
        # Image sizes given as ints are host scalars: every image-level term (the fallback crop, the ratio range)
        # is then computed on the host and costs no kernel. See NOTE [ Few kernels per draw ].
        # Tensors (B,) or floats, and so is every image-level term below.
        h_img: Any = self._sizes("heights", heights, n, device)
        w_img: Any = self._sizes("widths", widths, n, device)
        per_image = isinstance(h_img, Tensor) or isinstance(w_img, Tensor)
        if per_image:  # a shared size next to per-image ones becomes a tensor too (a fill: no host copy)
            h_img = h_img if isinstance(h_img, Tensor) else torch.full((n,), h_img, device=device)
            w_img = w_img if isinstance(w_img, Tensor) else torch.full((n,), w_img, device=device)
        # Random resized crop, strength-scaled: area range -> (1, 1), log-ratio range -> the image's own ratio.
        s_lo = 1.0 - s * (1.0 - self.scale[0])
        s_hi = 1.0 - s * (1.0 - self.scale[1])
        in_ratio = w_img / h_img
        log_img: Any = torch.log(in_ratio) if per_image else math.log(in_ratio)
        log_r0 = log_img * (1.0 - s) + s * math.log(self.ratio[0])
        log_r1 = log_img * (1.0 - s) + s * math.log(self.ratio[1])
        image_area = h_img * w_img
        # torchvision's fallback: whole image, ratio clamped into the range, centred; at least one pixel wide and
        # high (torchvision's would be empty for a 1-pixel image and a ratio range below 1/2).
        r_min: Any
        r_max: Any
        if per_image:
            r_min, r_max = torch.exp(log_r0), torch.exp(log_r1)
            fw = torch.minimum(torch.where(in_ratio > r_max, torch.round(h_img * r_max).clamp_min(1.0), w_img), w_img)
            fh = torch.minimum(torch.where(in_ratio < r_min, torch.round(w_img / r_min).clamp_min(1.0), h_img), h_img)
            fx, fy = torch.floor((w_img - fw) * 0.5), torch.floor((h_img - fh) * 0.5)
        else:
            r_min, r_max = math.exp(log_r0), math.exp(log_r1)
            fw = min(max(float(round(h_img * r_max)), 1.0) if in_ratio > r_max else w_img, w_img)
            fh = min(max(float(round(w_img / r_min)), 1.0) if in_ratio < r_min else h_img, h_img)
            fx, fy = math.floor((w_img - fw) * 0.5), math.floor((h_img - fh) * 0.5)
        flip_p = self.flip * s
        jitter_p = self.jitter_prob * s if self._jitter_active(s) else 0.0
        consts = self._jitter_consts(device, s)
        mags = (self.brightness, self.contrast, self.saturation, self.hue)
        ops = tuple(op for op, m in zip(_COLOUR_OPS, mags) if m > 0) if jitter_p > 0 else ()

        u = torch.rand((n, _NUM_UNIFORMS), generator=generator, device=device, dtype=torch.float32)
        if not per_image and _draw_backend(device) == "triton":  # the same draw in one kernel
            drawn = _fused.run(
                "draw", u, consts, tries=_NUM_TRIES, size=(w_img, h_img),
                area=(image_area * (s_hi - s_lo), image_area * s_lo), log_ratio=(log_r0, log_r1 - log_r0),
                fallback=(float(fx), float(fy), float(fw), float(fh)), flip_p=flip_p, jitter_p=jitter_p,
            )
            if drawn is not None:
                boxes, flags, factors = drawn
                flags = flags.view(torch.bool)
                bright, contrast, saturation, hue = factors.unbind(1)
                return AugmentParams(boxes, flags[:, 0], flags[:, 1], bright, contrast, saturation, hue, ops)
        t = _NUM_TRIES
        u_area, u_ratio = u[:, :t], u[:, t : 2 * t]
        u_x, u_y, u_flip, u_jit = u[:, 2 * t], u[:, 2 * t + 1], u[:, 2 * t + 2], u[:, 2 * t + 3]
        u_fac = u[:, 2 * t + 4 : 2 * t + 8]

        def col(v: Any) -> Any:  # a per-image term against (n, tries) candidates
            return v.unsqueeze(1) if isinstance(v, Tensor) else v

        area = u_area * col(image_area * (s_hi - s_lo)) + col(image_area * s_lo)
        aspect = torch.exp(u_ratio * col(log_r1 - log_r0) + col(log_r0))
        cw = torch.round(torch.sqrt(area * aspect))
        ch = torch.round(torch.sqrt(area / aspect))
        fits = (cw > 0) & (cw <= col(w_img)) & (ch > 0) & (ch <= col(h_img))
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first candidate that fits
        any_fits = fits.any(dim=1)
        cw = cw.gather(1, first).squeeze(1)
        ch = ch.gather(1, first).squeeze(1)
        cw = torch.where(any_fits, cw, fw)
        ch = torch.where(any_fits, ch, fh)
        x1 = torch.where(any_fits, torch.minimum(torch.floor(u_x * (w_img + 1.0 - cw)), w_img - cw), fx)
        y1 = torch.where(any_fits, torch.minimum(torch.floor(u_y * (h_img + 1.0 - ch)), h_img - ch), fy)
        boxes = torch.stack((x1, y1, cw, ch), dim=1)
        boxes[:, 2:].add_(boxes[:, :2])  # (x1, y1, x2, y2)

        flip = u_flip < flip_p
        jitter = u_jit < jitter_p
        low, span, unjittered = consts[:4], consts[4:8], consts[8:]
        if jitter_p > 0:  # factors uniform in [max(0, 1 - m s), 1 + m s], hue shift in [-hue s, hue s]
            factors = torch.where(jitter.unsqueeze(1), torch.addcmul(low, u_fac, span), unjittered)
        else:
            factors = unjittered.expand(n, 4)
        bright, contrast, saturation, hue = factors.unbind(1)
        return AugmentParams(boxes, flip, jitter, bright, contrast, saturation, hue, colour_ops=ops)

    def _jitter_consts(self, device: torch.device, strength: float) -> Tensor:
        """The jitter factors' lower ends, widths and unjittered values (12 values), made once per device and strength."""
        key = ("jitter", device, strength)
        cached = self._consts.get(key)
        if cached is None:
            stale = [k for k in self._consts if k[0] == "jitter"]
            if len(stale) >= _MAX_CACHED_STRENGTHS:  # a strength ramped every step must not grow the cache forever
                for k in stale:
                    del self._consts[k]
            s = strength
            mags = (self.brightness, self.contrast, self.saturation)
            low = [max(0.0, 1.0 - m * s) for m in mags] + [-self.hue * s]
            span = [1.0 + m * s - lo for m, lo in zip(mags, low)] + [2.0 * self.hue * s]
            cached = self._consts[key] = _to_device_async(low + span + [1.0, 1.0, 1.0, 0.0], device)
        return cached

    def _jitter_active(self, strength: float) -> bool:
        mags = (self.brightness, self.contrast, self.saturation, self.hue)
        return strength > 0 and self.jitter_prob > 0 and any(m > 0 for m in mags)

    @staticmethod
    def _sizes(name: str, value: int | Tensor, n: int, device: torch.device) -> Tensor | float:
        """A ``(n,)`` float32 tensor for per-image sizes, a host float for one size shared by the batch."""
        if isinstance(value, Tensor):
            if value.shape != (n,):
                raise ValueError(f"{name} should have shape ({n},), got {name}.shape={tuple(value.shape)}")
            if value.device.type != device.type:
                raise ValueError(f"{name} should be on {device}, got {name}.device={value.device}")
            # Checked where it is free: on a GPU the check would wait for the device (a host sync per batch).
            if value.device.type == "cpu" and value.numel() and not bool(
                ((value > 0) & (value == value.floor()) & value.isfinite()).all()  # NaN fails the first two
            ):
                raise ValueError(f"{name} should hold positive whole numbers (pixels), got {name}={value.tolist()}")
            return value.to(torch.float32)
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name} should be an int or a ({n},) tensor, got {name}={value!r}")
        if value <= 0:
            raise ValueError(f"{name} should be positive, got {name}={value}")
        return float(int(value))

    # ----------------------------------------------------------------------------------------------------- apply

    def apply(self, x: Tensor | Sequence[Tensor], params: AugmentParams) -> Tensor:
        """Apply drawn parameters to a batch; deterministic.

        Args:
            x: ``(B, C, H, W)`` uint8 or float (in ``[0, 1]``) tensor, or a list of ``(C, H_i, W_i)`` tensors.
            params: Parameters from :meth:`draw`, on ``x``'s device.

        Returns:
            ``(B, C, *size)`` tensor of dtype ``out_dtype``.

        Raises:
            TypeError: If ``x`` is neither a tensor nor a list of tensors, or not uint8 or floating point, or
                ``params`` is not :class:`AugmentParams`.
            ValueError: If ``x`` has the wrong shape or requires grad, ``params`` was drawn for another batch size
                or lives on another device, its boxes (on the CPU) are not whole pixel edges, or colour jitter meets
                a channel count other than 1 or 3.
        """
        batch, _, unit = self._as_batch(x)
        if isinstance(params, AugmentParams):
            check_pixel_edges("params.boxes", params.boxes)
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

        Raises:
            ValueError: If ``x`` has the wrong shape, is an empty list, or requires grad (the augmentation is not
                differentiable: its CUDA kernels have no backward), or ``strength`` is outside ``[0, 1]``.
            TypeError: If ``x`` is neither a tensor nor a list of tensors, or not uint8 or floating point,
                ``generator`` is not a ``torch.Generator``, or ``strength`` not a real number.
        """
        batch, sizes, unit = self._as_batch(x)
        if generator is None:
            generator = self._own_generator(batch.device)
        n, c, h, w = batch.shape
        if n == 0:  # nothing to draw (and no reduction over an empty batch)
            _check_strength(strength)
            self._check_channels(c)
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator should be a torch.Generator, got generator={generator!r}")
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            return batch.new_empty((0, c, *self.size), dtype=self.out_dtype).contiguous(memory_format=fmt)
        heights, widths = (h, w) if sizes is None else sizes
        params = self.draw(n, heights, widths, generator=generator, device=batch.device, strength=strength)
        return self._apply(batch, params, unit)

    def _as_batch(self, x: Tensor | Sequence[Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor] | None, float]:
        """A ``(B, C, H, W)`` tensor, each image's (heights, widths) for a list input, and the pixel unit.

        The unit is 1/255 for uint8 images (which stay in 0..255 until the colour stage), else 1.
        """
        if isinstance(x, Tensor):
            if x.ndim != 4 or x.shape[2] == 0 or x.shape[3] == 0:
                hint = ""
                if x.ndim == 3:  # one image, or a batch of one-channel images: the shape cannot tell
                    hint = channels_last_hint("x", x.shape) or (
                        ": a batch of one-channel images? pass x.unsqueeze(1); one image? pass [x] or x.unsqueeze(0)")
                raise ValueError(
                    f"x should be a (B, C, H, W) tensor with H, W > 0, or a list of (C, H, W) images, got "
                    f"x.shape={tuple(x.shape)}{hint}"
                )
            self._check_input(x)
            _check_channels_first(x)
            return x, None, (1.0 / 255.0 if x.dtype == torch.uint8 else 1.0)
        got = None
        if not isinstance(x, Sequence) or isinstance(x, str):
            got = f"x of type {type(x).__name__}"
        elif len(x) == 0:
            raise ValueError(f"x should be a tensor or a non-empty list of (C, H, W) tensors, got an empty "
                             f"{type(x).__name__}")
        else:
            i = next((i for i, t in enumerate(x) if not isinstance(t, Tensor)), None)
            got = None if i is None else f"x[{i}] of type {type(x[i]).__name__}"
        if got is not None:
            raise TypeError(f"x should be a tensor or a non-empty list of (C, H, W) tensors, got {got}")
        first = x[0]
        if first.ndim == 3:  # once: (H, W, C) images of different heights would also differ in "C" below
            _check_channels_first(first, "x[0]")
        for i, t in enumerate(x):
            if (
                t.ndim != 3
                or t.shape[0] != first.shape[0]
                or t.shape[1] == 0
                or t.shape[2] == 0
                or t.dtype != first.dtype
                or t.device != first.device
            ):
                raise ValueError(
                    f"x should be a list of (C, H, W) tensors, H, W > 0, with the same C, dtype and device, got "
                    f"x[{i}] of shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device} and x[0] of shape "
                    f"{tuple(first.shape)}, dtype {first.dtype}, device {first.device}"
                )
            self._check_input(t)
        hs = [t.shape[1] for t in x]
        ws = [t.shape[2] for t in x]
        # NOTE [ Padding a list of images ]
        # The images are copied into one zero-filled tensor of their own dtype (uint8 stays uint8, a quarter of the
        # float traffic; the float conversion follows as for a batch tensor): one fill and one copy per image, no
        # host sync. Zeros matter: the resampling grid is clamped to each crop's own pixels, but a bilinear tap at a
        # crop's last row or column has weight 0 on the padding, and 0 * NaN from uninitialised memory is NaN.
        # torch.nested's to_padded_tensor is one op at the dispatcher, but on CUDA it synchronises with the host
        # (seen on an H200 under set_sync_debug_mode("error")).
        batch = torch.zeros((len(x), first.shape[0], max(hs), max(ws)), dtype=first.dtype, device=first.device)
        for i, img in enumerate(x):
            batch[i, :, : hs[i], : ws[i]].copy_(img)
        sizes = _to_device_async([hs, ws], first.device)
        return batch, (sizes[0], sizes[1]), (1.0 / 255.0 if first.dtype == torch.uint8 else 1.0)

    @staticmethod
    def _check_input(x: Tensor) -> None:
        if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
            raise TypeError(f"x should be uint8 or floating point, got x.dtype={x.dtype}")
        check_no_grad("x", x, "GpuAugment")

    def _check_channels(self, c: int) -> None:
        if self.mean is not None and len(self.mean) not in (1, c):
            raise ValueError(f"mean and std should have 1 or C={c} values, got len(mean)={len(self.mean)}")

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A scratch tensor; reused between calls on the CPU, see NOTE [ Scratch buffers on the CPU ]."""
        if device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        if self._scratch is None:
            self._scratch = _Scratch()
        return self._scratch.get(name, shape, dtype)

    def _apply(self, x: Tensor, params: AugmentParams, unit: float) -> Tensor:
        if torch.is_autocast_enabled(x.device.type):
            # An ambient autocast (a call inside a model's amp region) would run the colour map's matmuls in
            # bfloat16/float16: out_dtype says the output's precision, so autocast is off for the whole apply.
            with torch.autocast(x.device.type, enabled=False):
                return self._apply(x, params, unit)
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
        self._check_channels(c)
        ops = params.colour_ops
        if ops is None:  # built by hand: every factor as given, where there is colour jitter at all
            ops = _COLOUR_OPS if c in (1, 3) else ()
        jitter_on = bool(ops)
        if jitter_on and c not in (1, 3):
            raise ValueError(
                f"colour jitter needs 1 or 3 channels, got x.shape={tuple(x.shape)} and params.colour_ops={ops} "
                "(parameters without jitter have colour_ops=())"
            )
        dev = x.device
        if _resample_backend(dev, x.dtype) == "triton":
            fused = self._apply_fused(x, params, unit, ops)
            if fused is not None:
                return fused
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
        if jitter_on:
            self._colour(out, params, unit, result, ops)
        else:
            self._normalise(out, unit, result)
        return result

    def _apply_fused(self, x: Tensor, params: AugmentParams, unit: float, ops: tuple[str, ...]) -> Tensor | None:
        """:meth:`_apply` with crop, resize and flip (and, unjittered, the normalisation) in one Triton kernel.

        None where the kernel cannot run (see NOTE [ Resampling in one kernel ]).
        """
        n, c, _, _ = x.shape
        oh, ow = self.size
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        result = torch.empty((n, c, oh, ow), dtype=self.out_dtype, device=x.device, memory_format=fmt)
        if not ops:  # the normalisation rides along: one kernel for the whole apply
            k = self._colour_consts(x.device, torch.float32, unit, c, hue=False)
            done = _fused.run("resample", x, params.boxes, params.flip, result, scale=k["scale"], shift=k["shift"])
            return None if done is None else result
        out = result if result.dtype == torch.float32 and not self.channels_last else None
        if out is None:
            out = torch.empty((n, c, oh, ow), dtype=torch.float32, device=x.device)
        if _fused.run("resample", x, params.boxes, params.flip, out) is None:
            return None
        self._colour(out, params, unit, result, ops)
        return result

    def _normalise(self, out: Tensor, unit: float, result: Tensor) -> None:
        if self.mean is None:
            if unit != 1.0:
                torch.mul(out, unit, out=result)
            elif result is not out:
                result.copy_(out)
            return
        k = self._colour_consts(out.device, out.dtype, unit, out.shape[1], hue=False)
        torch.addcmul(k["shift"].view(1, -1, 1, 1), out, k["scale"].view(1, -1, 1, 1), out=result)

    def _stats(self, c: int) -> tuple[list[float], list[float]]:
        """The normalisation's mean and std per channel (0 and 1 without normalisation)."""
        means = [0.0] * c if self.mean is None else list(self.mean) * (c if len(self.mean) == 1 else 1)
        stds = [1.0] * c if self.std is None else list(self.std) * (c if len(self.std) == 1 else 1)
        return means, stds

    def _bounds(self, c: int) -> list[tuple[float, float]]:
        """Each channel's clamp bounds: [0, 1] in normalised units."""
        return [(-m / sd, (1.0 - m) / sd) for m, sd in zip(*self._stats(c))]

    def _colour_consts(
        self, device: torch.device, dt: torch.dtype, unit: float, c: int, *, hue: bool
    ) -> dict[str, Tensor]:
        """Constants of the fused colour map for one (device, dtype, pixel unit, channel count, hue), made once.

        ``basis``: rows of per-sample matrix terms, each ``c * c`` entries (scaled by ``unit`` and ``1 / std`` per
        output channel) followed by its ``c`` row sums (scaled by ``1 / std`` only); see NOTE [ Fused colour map ].
        ``scale``/``shift``: ``unit / std`` and ``-mean / std`` (std 1, mean 0 without normalisation);
        ``lo``/``hi``: the clamp bounds [0, 1] in normalised units; ``gray``: the luma weights times ``unit``;
        ``phase``: ``(pi/2, 0)``, so ``sin(theta + phase) = (cos, sin)``.
        """
        key = (device, dt, unit, c, hue)
        cached = self._consts.get(key)
        if cached is not None:
            return cached
        means, stds = self._stats(c)
        if c == 3:
            eye = [[float(i == j) for j in range(3)] for i in range(3)]
            g_rows = [list(_GRAY)] * 3  # 1 g^T: every output channel takes the gray level
            terms = [_HUE_BASES[0], _HUE_BASES[1], _HUE_BASES[2], g_rows] if hue else [eye, g_rows]
        else:  # no colour jitter on other channel counts: the identity, scaled by the normalisation
            terms = [[[float(i == j) for j in range(c)] for i in range(c)]]
        basis = [
            [m[i][j] * unit / stds[i] for i in range(c) for j in range(c)] + [sum(m[i]) / stds[i] for i in range(c)]
            for m in terms
        ]
        host: dict[str, Any] = {
            "basis": basis,
            "scale": [unit / sd for sd in stds],
            "shift": [-m / sd for m, sd in zip(means, stds)],
            "lo": [[lo] for lo, _ in self._bounds(c)],
            "hi": [[hi] for _, hi in self._bounds(c)],
            "gray": [w * unit for w in _GRAY],
            "phase": [math.pi / 2, 0.0],
        }
        cached = {name: _to_device_async(v, device, dt) for name, v in host.items()}
        self._consts[key] = cached
        return cached

    def _colour(self, out: Tensor, params: AugmentParams, unit: float, result: Tensor, ops: tuple[str, ...]) -> None:
        """Jitter and normalise as one per-sample affine colour map and one clamp.

        See NOTE [ Hue as a rotation about the gray axis ] and NOTE [ Fused colour map ].
        """
        n, c, oh, ow = out.shape
        dt = out.dtype
        hue = "hue" in ops
        k = self._colour_consts(out.device, dt, unit, c, hue=hue)
        flat = out.view(n, c, oh * ow)
        b = params.brightness.to(dt)
        kc = params.contrast.to(dt)
        if c == 3:
            sat = params.saturation.to(dt).unsqueeze(1)
            if hue:
                trig = torch.sin(torch.add(k["phase"], params.hue.to(dt).unsqueeze(1), alpha=2.0 * math.pi))
                coef = torch.cat((sat, trig * sat, 1.0 - sat), dim=1)  # (sat, sat cos, sat sin, 1 - sat)
            else:
                coef = torch.cat((sat, 1.0 - sat), dim=1)
            terms = coef @ k["basis"]
        else:  # grayscale: saturation and hue are no-ops
            terms = k["basis"].expand(n, 2)
        mat = (terms[:, : c * c] * (b * kc).unsqueeze(1)).view(n, c, c)
        bias = k["shift"].expand(n, c)
        if "contrast" in ops:
            # Contrast blends with the mean gray level of the brightness-adjusted image, b * mean(gray(x)): the
            # map adds M (1 - k) b mean_gray to every pixel, M's row sums being the basis' last c columns.
            mean_gray = flat.mean(dim=2) @ k["gray"] if c == 3 else flat.mean(dim=(1, 2)) * unit
            bias = torch.addcmul(bias, terms[:, c * c :], ((1.0 - kc) * b * mean_gray).unsqueeze(1))
        backend = _colour_backend(out.device, dt, c)
        if backend == "triton" and _fused.run("colour", flat, mat, bias, k["lo"].view(-1), k["hi"].view(-1),
                                               result.view(n, c, oh * ow)) is not None:
            return
        tmp = self._buffer("colour", (n, c, oh * ow), dt, out.device)
        tmp = _COLOUR_MAPS["bmm" if backend == "bmm" else "channels"](flat, mat, bias, tmp)
        dst = result.view(n, c, oh * ow) if result.is_contiguous() else tmp
        if out.device.type == "cpu":  # a clamp per channel with host bounds: 6x faster there than tensor bounds
            same = dst.dtype == tmp.dtype  # else clamped in place, then converted by one copy
            for ch, (lo, hi) in enumerate(self._bounds(c)):
                torch.clamp(tmp[:, ch], lo, hi, out=dst[:, ch] if same else tmp[:, ch])
            if not same:
                dst.copy_(tmp)
        else:
            torch.clamp(tmp, k["lo"], k["hi"], out=dst)
        if not result.is_contiguous():
            result.copy_(tmp.view(n, c, oh, ow))

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


# NOTE [ Resampling in one kernel ]
# On the CPU (and wherever Triton is missing or fails, warned once), crop, resize and flip are one `grid_sample` call
# on a float copy of the input, with a sampling grid built from the boxes by about ten small ops. On an H200,
# `grid_sample` was the largest kernel of a call (0.37 of 0.69 ms), the float copy another full pass. So on CUDA the
# three run as one Triton kernel (`_resample_kernel.py`) that reads the input in its own dtype (uint8 stays uint8),
# computes each output pixel's sample position from its box and flip, and writes the same bilinear blend up to float
# rounding. An unjittered batch is normalised in the same kernel, written straight in the output's dtype and memory
# format; a jittered one goes on to the colour map, whose contrast term needs the resized image's mean first.

# NOTE [ Applying the colour map ]
# y = M x + c with a per-sample 3x3 M is a batched matmul of (3, 3) by (3, H W). On the CPU one `baddbmm` is the
# fastest, then one clamp. On CUDA the BLAS's batched GEMM is a poor fit for k = n = 3: an H200 profile showed a magma
# sgemm kernel taking 0.53 ms of a 1.37 ms GpuAugment call (0.6 TB/s). A per-channel chain of `addcmul`s with
# per-sample scalars was 1.4x faster there (a grouped 1x1 conv1d 0.7x), still nine strided passes. So on CUDA, for 3
# float32 channels, the map and its clamp run as one Triton kernel (`_colour_kernel.py`) that reads each pixel once
# and writes the result in its dtype and memory format; the `addcmul` chain remains for other cases and wherever
# Triton is missing or fails (warned once). benchmarks/gpu_augment.py times all the candidates side by side.


def _colour_map_bmm(flat: Tensor, mat: Tensor, bias: Tensor, out: Tensor) -> Tensor:
    """``out = mat @ flat + bias`` in one ``baddbmm``.

    ``flat`` and ``out`` are ``(N, C, P)``, ``mat`` ``(N, C, C)``, ``bias`` ``(N, C)``.
    """
    return torch.baddbmm(bias.unsqueeze(2), mat, flat, out=out)


def _colour_map_channels(flat: Tensor, mat: Tensor, bias: Tensor, out: Tensor) -> Tensor:
    """``out = mat @ flat + bias`` as a per-output-channel chain of ``addcmul`` with per-sample scalars."""
    c = flat.shape[1]
    for i in range(c):
        row = out[:, i]
        torch.addcmul(bias[:, i : i + 1], flat[:, 0], mat[:, i, 0:1], out=row)
        for j in range(1, c):
            row.addcmul_(flat[:, j], mat[:, i, j : j + 1])
    return out


_COLOUR_MAPS: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]] = {
    "bmm": _colour_map_bmm,
    "channels": _colour_map_channels,
}


def _colour_backend(device: torch.device, dtype: torch.dtype, c: int) -> str:
    """``"bmm"``, ``"channels"`` or ``"triton"``: how to apply the colour map, see NOTE [ Applying the colour map ]."""
    if device.type == "cpu":
        return "bmm"
    if device.type == "cuda" and dtype == torch.float32 and c == 3 and _fused.kernel("colour") is not None:
        return "triton"
    return "channels"


def _resample_backend(device: torch.device, dtype: torch.dtype) -> str:
    """``"triton"`` or ``"grid"``: how to crop, resize and flip, see NOTE [ Resampling in one kernel ].

    float64 input keeps the grid path: the kernel computes in float32.
    """
    fits = device.type == "cuda" and dtype != torch.float64
    return "triton" if fits and _fused.kernel("resample") is not None else "grid"


def _draw_backend(device: torch.device) -> str:
    """``"triton"`` or ``"torch"``: how to draw a batch of one image size, see NOTE [ Few kernels per draw ]."""
    return "triton" if device.type == "cuda" and _fused.kernel("draw") is not None else "torch"


# NOTE [ Scratch buffers on the CPU ]
# On these CPUs a fresh multi-MB tensor costs page faults on every call (glibc gives each its own mapping): a fresh
# 64x3x256x256 uint8->float conversion took 15 ms against 1.2 ms into a reused buffer. On the CPU, GpuAugment
# therefore keeps its intermediates (float copy of the input, sampling grid, colour-map output) in per-thread scratch
# buffers that live as long as the augmenter (about 2 x the float size of one batch). The tensor it returns is always
# fresh, never a reused buffer. On CUDA the caching allocator already recycles memory, so no scratch is kept.


class _Scratch(threading.local):
    """Per-thread named scratch tensors, reallocated when the shape or dtype changes.

    They are normal tensors even when made under ``torch.inference_mode()`` (a preview in a notebook), so that
    calls outside it (the training after it) can write them.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, Tensor] = {}

    @normal_tensors
    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        buf = self.buffers.get(name)
        if buf is None or tuple(buf.shape) != shape or buf.dtype != dtype:
            buf = self.buffers[name] = torch.empty(shape, dtype=dtype)
        return buf


@functools.lru_cache(maxsize=64)
def _grid_consts(
    device: torch.device, dtype: torch.dtype, size: tuple[int, int], padded: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Constants of :func:`_crop_resize_flip_grid` for one output size and padded input size, made once.

    Returns the output pixel centres in ``[0, 1]`` along x (and mirrored) and along y, the scale and offset that
    take ``(x1, y1, x2, y2)`` pixel edges to ``grid_sample``'s ``[-1, 1]``, and half a pixel in those units.
    """
    (oh, ow), (h_pad, w_pad) = size, padded
    u = [(k + 0.5) / ow for k in range(ow)]
    v = [(k + 0.5) / oh for k in range(oh)]
    scale = [2.0 / w_pad, 2.0 / h_pad]
    host = (u, u[::-1], v, scale * 2, [-1.0] * 4, [1.0 / w_pad, 1.0 / h_pad])
    return tuple(_to_device_async(t, device, dtype) for t in host)  # type: ignore[return-value]


def _crop_resize_flip_grid(
    x: Tensor, params: AugmentParams, size: tuple[int, int], *, grid: Tensor | None = None
) -> Tensor:
    """Crop every box, resize it bilinearly to ``size`` and flip where asked, in one ``grid_sample`` call.

    Equals cropping (slicing) then ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` then
    flipping, up to the float32 rounding of the sample points in normalised units (about ``W_pad * 6e-8`` of a
    pixel: 5e-5 at 512 px, under 1e-3 at 6000 px; exact in float64): the sample points are clamped to each crop's
    own pixel centres, so neither the pixels around the crop nor the padding of a batch of different-sized images
    leak in (with one exception: a point on a crop's last row or column still reads its outer neighbour with weight
    0, so a NaN or inf there gives NaN; the fused CUDA kernel clamps that tap too). ``grid`` is an optional
    ``(B, *size, 2)`` buffer.
    The grid is computed in ``grid_sample``'s normalised units from cached constants: about ten small ops per batch.
    """
    n, _, h_pad, w_pad = x.shape
    oh, ow = size
    dt = x.dtype
    u, u_rev, v, scale, offset, half_px = _grid_consts(x.device, dt, (oh, ow), (h_pad, w_pad))
    edges = torch.addcmul(offset, params.boxes.to(dt), scale)  # (x1, y1, x2, y2) in [-1, 1]
    lo, hi = edges[:, :2], edges[:, 2:]
    span = hi - lo
    first, last = lo + half_px, hi - half_px  # the crop's outermost pixel centres
    u = torch.where(params.flip.unsqueeze(1), u_rev, u)  # (B, ow); mirrored exactly for flipped samples
    xs = torch.clamp(torch.addcmul(lo[:, :1], u, span[:, :1]), first[:, :1], last[:, :1])
    ys = torch.clamp(torch.addcmul(lo[:, 1:], v, span[:, 1:]), first[:, 1:], last[:, 1:])
    if grid is None:
        grid = torch.empty((n, oh, ow, 2), dtype=dt, device=x.device)
    grid[..., 0].copy_(xs.view(n, 1, ow))
    grid[..., 1].copy_(ys.view(n, oh, 1))
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
# Kornia augmentations, torchvision v2 transforms and most other callables draw their parameters from torch's
# *global* RNG and take no generator. To keep runs reproducible under our explicit generators (the same draws after a
# resume, whatever the caller's global state), apply_augment draws a seed from the caller's generator, then runs any
# augmentation but a GpuAugment inside `torch.random.fork_rng`, which saves the CPU RNG (and the RNG of the input's
# CUDA device) and restores it on exit, after seeding exactly those RNGs with the drawn seed. This is the only place
# in enlight_data that touches global RNG state, and it leaves it as it found it. The seed is read from a CUDA
# generator on the host (_host_seed), so nothing waits for the device.


def _is_kornia_augmentation(obj: object) -> bool:
    """Whether ``obj`` is an instance of a class from ``kornia.augmentation`` (a subclass of one included), or an
    ``nn.Sequential`` (with its own ``forward``) of nothing else (``nn.Sequential(K.RandomResizedCrop(...),
    K.ColorJitter(...))``, as Kornia's own examples chain them).

    By the class's module rather than a list of base classes: Kornia's augmentations, containers and auto-augment
    policies (``RandAugment``, ``TrivialAugment``, ``AutoAugment``) share no public base class, and all take only
    float images.
    """
    if any(cls.__module__.startswith("kornia.augmentation") for cls in type(obj).__mro__):
        return True
    # nn.Sequential's own forward: a subclass with a forward of its own may convert uint8 itself.
    return (isinstance(obj, nn.Sequential) and type(obj).forward is nn.Sequential.forward and len(obj) > 0
            and all(_is_kornia_augmentation(m) for m in obj))


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


def _check_channels_first(x: Tensor, name: str = "x") -> None:
    """Refuse a ``(B, H, W, C)`` or ``(H, W, C)`` image tensor (see ``channels_last_hint``)."""
    hint = channels_last_hint(name, x.shape)
    if hint:
        form = "(B, C, H, W)" if x.dim() == 4 else "(C, H, W)"
        raise ValueError(f"{name} should be channels-first, {form}, got {name}.shape={tuple(x.shape)}{hint}")


def _check_augmentable(augment: Any, x: Any) -> None:
    """The layout checks :func:`apply_augment` makes of a batch for a GpuAugment or a Kornia augmentation, without
    augmenting: the loader makes them at its first batch for every phase's augmentation, so a batch that a later
    phase could not augment fails at once, not when that phase begins (maybe epochs later).

    Raises:
        TypeError: If a Kornia augmentation is given something other than a tensor (a list of images).
        ValueError: If the batch (or a list's first image) looks channels-last.
    """
    if isinstance(augment, GpuAugment):
        if isinstance(x, Tensor):
            _check_channels_first(x)
        elif isinstance(x, list) and x and isinstance(x[0], Tensor) and x[0].ndim == 3:
            _check_channels_first(x[0], "x[0]")
    elif _is_kornia_augmentation(augment):
        if not isinstance(x, Tensor):
            raise TypeError(f"a Kornia augmentation needs a (B, C, H, W) tensor, got x={type(x).__name__}")
        _check_channels_first(x)


def _first_tensor(x: Any) -> Tensor | None:
    """The batch's tensor, or the first of a list, tuple or dict batch (whose device's RNG is seeded)."""
    if isinstance(x, Tensor):
        return x
    items = x.values() if isinstance(x, Mapping) else x if isinstance(x, Sequence) and not isinstance(x, str) else ()
    return next((t for t in items if isinstance(t, Tensor)), None)


def apply_augment(
    augment: GpuAugment | Callable[..., Tensor],
    x: Tensor | Sequence[Tensor],
    *,
    generator: torch.Generator,
    strength: float = 1.0,
) -> Tensor:
    """Run an augmentation on a batch, reproducibly under ``generator``; the loader's single entry point.

    Args:
        augment: A :class:`GpuAugment` (called with ``generator`` and ``strength``), a Kornia augmentation or
            augmentation container, or a plain ``nn.Sequential`` of them (uint8 input is converted to float in
            ``[0, 1]``), or any other callable (called as ``augment(x)``). All but a GpuAugment run under a seed
            drawn from ``generator`` (NOTE [ Kornia and the global RNG ]).
        x: The batch.
        generator: Source of randomness for this batch.
        strength: Augmentation strength in ``[0, 1]``; only :class:`GpuAugment` can scale its augmentation, so
            any other augmentation needs 1.

    Returns:
        The augmented batch.

    Raises:
        TypeError: If ``augment`` is not callable or returns None, ``generator`` is not a ``torch.Generator``, or a
            Kornia augmentation is given something other than a tensor.
        ValueError: If ``strength`` is outside ``[0, 1]``, or not 1 for an augmentation other than a GpuAugment, or
            the batch of a GpuAugment or Kornia augmentation looks channels-last (``(B, H, W, C)``), or a tensor
            made of an image batch (a tensor or a list of images) does not keep its batch size.
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
    if strength != 1.0:
        raise ValueError(
            f"strength scales a GpuAugment only, got strength={strength} with augment of type "
            f"{type(augment).__name__}"
        )
    if _is_kornia_augmentation(augment):
        _check_augmentable(augment, x)  # a channels-first tensor
        if cast(Tensor, x).dtype == torch.uint8:
            x = cast(Tensor, x).to(torch.float32).div_(255.0)
    first = _first_tensor(x)
    device = first.device if first is not None else torch.device("cpu")  # a batch of other things: the CPU's RNG
    seed = _host_seed(generator)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        out = augment(x)
    _check_augmented(augment, x, out)
    return out


def _check_augmented(augment: Callable[..., Any], x: Any, out: Any) -> None:
    """An augmentation returns something, and a tensor it makes of an image batch (a tensor, or a list of images)
    keeps the batch's size: a callable that forgot its ``return``, or dropped samples, would misalign the batch with
    its targets. Other results (two views as a tuple, a list of images) are the callable's to choose."""
    name = getattr(augment, "__name__", type(augment).__name__)
    if out is None:
        raise TypeError(f"augment should return the augmented batch, got None from augment {name} (a missing return?)")
    if isinstance(x, Tensor) and x.dim():
        n = x.shape[0]
    elif isinstance(x, list) and x and all(isinstance(t, Tensor) for t in x):
        n = len(x)
    else:
        return  # a batch of other things: whatever the callable makes of it
    if isinstance(out, Tensor) and (out.dim() == 0 or out.shape[0] != n):
        raise ValueError(f"augment should keep the batch size {n} as its output's first dimension, got an output of "
                         f"shape {tuple(out.shape)} from augment {name}")
