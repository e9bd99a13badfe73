"""Scheduled Mixup and CutMix, vectorised over the batch, with soft targets.

Random parameters are drawn first (:func:`draw_mix`) as device tensors for the
whole batch, then applied (:func:`apply_mix`) with a few vectorised kernels: no
loop over samples, no host synchronisation, and the caller's tensors are never
written to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import NamedTuple, cast

import torch
from torch import Tensor

from . import _fused as _fused_kernels
from ._validate import (
    channels_last_hint, check_device, check_int, check_no_grad, check_pixel_edges, check_range, comparable,
)
from .schedule import Phase

__all__ = ["MixParams", "apply_mix", "draw_mix", "mix_batch", "mix_size", "to_soft_targets"]


@dataclass(frozen=True)
class MixParams:
    """Per-sample mixing parameters of one batch (all on the batch's device).

    Attributes:
        lam: ``(B,)`` float32, the weight of each sample's own label (1 = unmixed).
        weight: ``(B, 1, 1, 1)`` float32 Mixup weight of the partner's input, or
            ``(B, 1, H, W)`` when CutMix and Mixup were blended on the device; ``None``
            for pure CutMix.
        box: ``(B, 4)`` float32 CutMix boxes ``(x1, y1, x2, y2)`` in pixel-edge coordinates
            (integer-valued, pixels ``x1 .. x2 - 1`` pasted from the partner; empty where a
            sample is not mixed), or ``None``.
        shift: Sample ``i`` is mixed with sample ``(i + shift) % B``.
        size: The ``(H, W)`` the boxes were drawn for.
    """

    lam: Tensor
    weight: Tensor | None
    box: Tensor | None
    shift: int
    size: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        n = int(self.lam.shape[0]) if isinstance(self.lam, Tensor) and self.lam.dim() == 1 else None
        if n is None:
            raise ValueError(f"lam should be a (B,) tensor, got {self.lam!r:.80}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or not 0 <= self.shift < max(n, 1):
            raise ValueError(f"shift should be an int in [0, {n}) (the batch size {n}), got shift={self.shift!r}")

    def to(self, device: torch.device | str) -> MixParams:
        """Return a copy with every tensor moved to ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("lam", "weight", "box"):
            moved[name] = None if moved[name] is None else moved[name].to(device)
        return MixParams(**moved)

    @property
    def mixed(self) -> Tensor:
        """``(B,)`` bool: the samples whose input or label was changed."""
        return self.lam < 1.0

    @property
    def mask(self) -> Tensor | None:
        """``(B, 1, H, W)`` bool CutMix mask (``True`` = pasted from the partner), made from :attr:`box`, or None."""
        return None if self.box is None else _box_mask(self.box, *self.size)


# Below this α, Beta draws are made in log space (NOTE [ Beta draws with a generator ]).
_SMALL_ALPHA = 0.2


@functools.lru_cache(maxsize=32)
def _concentration(alpha: float, n: int, device: torch.device) -> Tensor:
    """The ``(n, 2)`` Gamma concentration of a Beta(α, α) draw, made once (``_standard_gamma`` only reads it)."""
    return torch.full((n, 2), alpha, dtype=torch.float32, device=device)


def _beta_draw(alpha: float, n: int, *, generator: torch.Generator, device: torch.device) -> Tensor:
    """The raw draw of ``n`` Beta(α, α) values: ``(n, 2)`` Gamma(α) pairs (see :func:`_share`), or below
    ``_SMALL_ALPHA`` the ``(n,)`` values themselves."""
    # NOTE [ Beta draws with a generator ]
    # torch.distributions.Beta has no generator argument; _standard_gamma does. Beta(α, α) = G1 / (G1 + G2) for
    # two Gamma(α) draws: one kernel for the pair, and the ratio is taken where the draw is used (on CUDA inside
    # the mix_params kernel, with no launch of its own). A Gamma draw is clamped to the smallest normal float,
    # and below _SMALL_ALPHA both draws of a pair fall under it often enough to matter (the ratio is then 1/2:
    # P(G < tiny)^2, about 1.7e-4 of the pairs at α = 0.05 and 0.84 at 1e-3, where Beta(α, α) is almost always
    # 0 or 1; 8e-16 at 0.2), so small alphas draw in log space:
    # log Gamma(α) = log Gamma(α + 1) + log(U) / α (Marsaglia and Tsang's boost), and the value is
    # sigmoid(log G1 - log G2), exact to float precision.
    alpha = float(alpha)
    if alpha >= _SMALL_ALPHA:
        return torch._standard_gamma(_concentration(alpha, n, device), generator=generator)
    boosted = torch._standard_gamma(_concentration(alpha + 1.0, n, device), generator=generator)
    uniform = torch.rand((n, 2), generator=generator, device=device).clamp_min_(torch.finfo(torch.float32).tiny)
    log_gamma = boosted.log().add_(uniform.log_().div_(alpha))
    return torch.sigmoid(log_gamma[:, 0] - log_gamma[:, 1])


def _share(draw: Tensor) -> Tensor:
    """The ``(n,)`` Beta(α, α) values of a :func:`_beta_draw`: ``G1 / (G1 + G2)`` (Gamma draws are positive)."""
    return draw if draw.dim() == 1 else draw[:, 0] / draw.sum(1)


def _beta(alpha: float, n: int, *, generator: torch.Generator, device: torch.device) -> Tensor:
    """``n`` draws of Beta(α, α) (symmetric: ``x`` and ``1 - x`` have the same law)."""
    return _share(_beta_draw(alpha, n, generator=generator, device=device))


@functools.lru_cache(maxsize=32)
def _box_consts(height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Half the image's ``(W, H)``, the ``(W, H)`` itself, and the pixel indices along x and y, made once."""
    host = ([width / 2.0, height / 2.0], [float(width), float(height)], range(width), range(height))
    made = tuple(torch.tensor(list(v), dtype=torch.float32) for v in host)
    if device.type != "cpu":
        made = tuple(t.to(device, non_blocking=True) for t in made)
    return made  # type: ignore[return-value]


def _box_mask(box: Tensor, height: int, width: int) -> Tensor:
    """The ``(n, 1, H, W)`` bool mask of ``(n, 4)`` boxes ``(x1, y1, x2, y2)``."""
    n = box.shape[0]
    *_, xs, ys = _box_consts(height, width, box.device)
    in_cols = (xs >= box[:, 0:1]) & (xs < box[:, 2:3])
    in_rows = (ys >= box[:, 1:2]) & (ys < box[:, 3:4])
    # Expand the row factor into a fresh mask and AND the column factor in place: on the
    # CPU this is 4-10x faster than the out-of-place broadcast ``&`` (measured, 256x224x224).
    mask = in_rows[:, None, :, None].expand(n, 1, height, width).contiguous()
    mask &= in_cols[:, None, None, :]
    return mask


def _fused(name: str, device: torch.device) -> bool:
    """Whether to try the fused Triton kernel ``name`` for tensors on ``device`` (CUDA, with Triton)."""
    return device.type == "cuda" and _fused_kernels.kernel(name) is not None


def _cut_boxes(
    alpha: float,
    n: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator,
    device: torch.device,
    applied: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """CutMix boxes ``(n, 4)`` ``(x1, y1, x2, y2)`` (empty where not ``applied``) and λ corrected to the pasted area,
    as PyTorch ops (:func:`_boxes`)."""
    draw = _beta_draw(alpha, n, generator=generator, device=device)
    pixel = torch.randint(0, height * width, (n,), generator=generator, device=device)
    return _boxes(_share(draw), pixel, applied, height, width)


def _boxes(share: Tensor, pixel: Tensor, applied: Tensor | None, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Boxes and λ from the draws: ``share`` ``(n,)`` Beta(α, α), ``pixel`` ``(n,)`` flat centre indices ``y * W + x``.

    As in the paper's code and torchvision v2's ``CutMix``, a box of side ``sqrt(1 - λ_raw)`` times each image side,
    ``λ_raw ~ Beta(α, α)``, rounded down to an even number of pixels (the same half on either side of the centre),
    is centred on a uniform pixel and clipped to the image. (timm pastes ``floor(side)`` pixels, one more on an odd
    side.) λ is then corrected to the pasted area, so labels always match the pixels.
    """
    # NOTE [ Few kernels per CutMix draw ]
    # Every op here is a kernel launch on a GPU, where this runs per batch: an H200 ran CutMix at a third of a
    # bare lerp's speed, bound by the launches of about thirty small ops. So the box is a (n, 4) tensor, never a
    # mask in memory unless asked for (MixParams.mask, or the PyTorch apply on the CPU), 1 - λ_raw is drawn
    # directly (Beta(α, α) is symmetric), the centre is one draw of a flat pixel index,
    # floor(floor(S·r) / 2) == floor(r·S/2), the constants are cached per device, and on CUDA all of this (and
    # the mixed soft targets) is one Triton kernel (_mix_kernel.mix_params), which gives the same boxes; with
    # class indices, the same kernel as the blend (NOTE [ One launch per mix ]).
    halves, sizes, _, _ = _box_consts(height, width, share.device)
    half = torch.floor(torch.sqrt(share).unsqueeze(1) * halves)
    centre = torch.stack((pixel % width, torch.div(pixel, width, rounding_mode="floor")), dim=1)  # float32 below
    lo = (centre - half).clamp_min_(0.0)
    hi = torch.minimum(centre + half, sizes)
    if applied is not None:
        hi = torch.where(applied.unsqueeze(1), hi, lo)
    lam = torch.rsub((hi - lo).prod(1), 1.0, alpha=1.0 / (height * width))  # 1 - area / (H * W)
    return torch.cat((lo, hi), dim=1), lam


def _check_draw_args(phase: Phase, generator: torch.Generator, host_generator: torch.Generator | None) -> None:
    """``phase`` should be a Phase, ``generator`` a torch.Generator, ``host_generator`` None or a CPU one."""
    # NOTE [ No global RNG ]
    # torch's samplers take generator=None as "use the global RNG": accepting None here would make a
    # run depend on hidden global state (and crash on the device-side choice), so every draw needs
    # an explicit generator.
    if not isinstance(phase, Phase):
        raise TypeError(f"phase should be a Phase, got phase={phase!r:.80} of type {type(phase).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator should be a torch.Generator (on the batch's device), got generator={generator!r:.80} "
            f"of type {type(generator).__name__}"
        )
    if host_generator is not None:
        if not isinstance(host_generator, torch.Generator):
            raise TypeError(
                f"host_generator should be a CPU torch.Generator or None, got host_generator={host_generator!r:.80} "
                f"of type {type(host_generator).__name__}"
            )
        if host_generator.device.type != "cpu":
            raise ValueError(
                f"host_generator should be a CPU torch.Generator or None, got a generator on {host_generator.device}"
            )


def _choice_generator(generator: torch.Generator, host_generator: torch.Generator | None) -> torch.Generator | None:
    """The CPU generator for the per-batch Mixup-or-CutMix choice, or None: choose on the device."""
    if host_generator is not None:
        return host_generator
    return generator if generator.device.type == "cpu" else None


class _Raw(NamedTuple):
    """One batch's raw draws, before they become parameters (by the PyTorch ops or a fused kernel)."""

    shift: int
    size: tuple[int, int]
    coin: Tensor | None  # (n,) uniforms held against mix_prob; None when every sample mixes
    draw: Tensor  # the Beta(α, α) draw (_beta_draw)
    pixel: Tensor | None  # (n,) CutMix box centres as flat pixel indices; None for Mixup


def _raw_draws(
    phase: Phase,
    batch_size: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator,
    device: torch.device,
    host_generator: torch.Generator | None,
) -> _Raw | None:
    """The raw draws of a batch that mixes (``phase.mixes``, two samples or more); None where Mixup and CutMix are
    both drawn and chosen between on the device (:func:`_draw_both`), which draws nothing here."""
    n = 1 if phase.mode == "batch" else batch_size
    use_mix, use_cut = phase.mixup_alpha > 0, phase.cutmix_alpha > 0
    if use_mix and use_cut:
        host = _choice_generator(generator, host_generator)
        if host is None:
            return None
        # switch_prob picks CutMix or Mixup for the whole batch: a host-side draw, no sync.
        use_cut = bool(torch.rand((), generator=host) < phase.switch_prob)
    # mix_prob = 1 (the default) needs no per-sample coin: a kernel fewer.
    coin = torch.rand(n, generator=generator, device=device) if phase.mix_prob < 1.0 else None
    draw = _beta_draw(phase.cutmix_alpha if use_cut else phase.mixup_alpha, n, generator=generator, device=device)
    pixel = torch.randint(0, height * width, (n,), generator=generator, device=device) if use_cut else None
    return _Raw(batch_size // 2, (height, width) if use_cut else (1, 1), coin, draw, pixel)


class _Drawn(NamedTuple):
    """What :func:`_draw` gives: the parameters, whether each sample is mixed, and the mixed soft targets if made."""

    params: MixParams
    mixed: Tensor
    soft: Tensor | None


def _draw(
    phase: Phase,
    batch_size: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator,
    device: torch.device,
    host_generator: torch.Generator | None,
    target: Tensor | None = None,
    num_classes: int = 0,
    raw: _Raw | None = None,
) -> _Drawn | None:
    """:func:`draw_mix`, checked arguments; given ``(B,)`` class indices ``target`` on ``device``, the fused kernel
    also makes the mixed soft targets (``_Drawn.soft``; None where the PyTorch ops ran: the caller mixes them).
    ``raw``: the batch's draws if already made (by :func:`_mix`, for a kernel that did not run)."""
    if not phase.mixes or batch_size < 2:
        return None
    if raw is None:
        raw = _raw_draws(phase, batch_size, height, width, generator=generator, device=device,
                         host_generator=host_generator)
        if raw is None:
            return _draw_both(phase, batch_size, height, width, generator=generator, device=device)
    shift, size, coin, draw, pixel = raw
    n, use_cut = draw.shape[0], pixel is not None
    if _fused("mix_params", device):
        made = _fused_kernels.run(
            "mix_params", draw, batch_size=batch_size, shift=shift, coin=coin, prob=phase.mix_prob, pixel=pixel,
            size=size, target=target, num_classes=num_classes, label_smoothing=phase.label_smoothing,
        )
        if made is not None:
            lam, second, mixed, soft = made
            weight, box = (None, second) if use_cut else (second.view(-1, 1, 1, 1), None)
            return _Drawn(MixParams(lam=lam, weight=weight, box=box, shift=shift, size=size), mixed, soft)
    share = _share(draw)  # the partner's share, 1 - λ
    applied = None if coin is None else coin < phase.mix_prob
    weight = box = None
    if use_cut:
        box, lam = _boxes(share, cast(Tensor, pixel), applied, height, width)  # λ = 1 where not applied: empty box
    else:
        if applied is not None:
            share = share * applied
        lam = 1.0 - share
        share = share.where(lam < 1.0, 0.0)  # λ = 1 (unmixed) has no partner weight: NOTE [ Exact unmixed samples ]
        weight = share.view(-1, 1, 1, 1)
    if n != batch_size:
        lam = lam.expand(batch_size)
        weight = None if weight is None else weight.expand(batch_size, 1, 1, 1)
        box = None if box is None else box.expand(batch_size, 4)
    params = MixParams(lam=lam.contiguous(), weight=weight, box=box, shift=shift, size=size)
    return _Drawn(params, params.mixed, None)


def _draw_both(phase: Phase, batch_size: int, height: int, width: int, *, generator: torch.Generator,
               device: torch.device) -> _Drawn:
    """Mixup and CutMix both drawn, the choice made on the device: a ``(B, 1, H, W)`` weight, 1 inside the box if
    CutMix won (a CUDA generator and no host generator; costs more than a host choice)."""
    n = 1 if phase.mode == "batch" else batch_size
    applied = torch.rand(n, generator=generator, device=device) < phase.mix_prob if phase.mix_prob < 1.0 else None
    share = _beta(phase.mixup_alpha, n, generator=generator, device=device)  # the partner's share, 1 - λ
    share = share.where(1.0 - share < 1.0, 0.0)  # λ = 1 has no partner weight (NOTE [ Exact unmixed samples ])
    cut_box, lam_cut = _cut_boxes(phase.cutmix_alpha, n, height, width, generator=generator, device=device)
    cut = torch.rand(1, generator=generator, device=device) < phase.switch_prob
    lam = torch.where(cut, lam_cut, 1.0 - share)
    weight = torch.where(cut.view(1, 1, 1, 1), _box_mask(cut_box, height, width).float(), share.view(-1, 1, 1, 1))
    if applied is not None:
        weight = weight * applied.view(-1, 1, 1, 1)
        lam = torch.where(applied, lam, 1.0)
    if n != batch_size:
        lam = lam.expand(batch_size)
        weight = weight.expand(batch_size, *weight.shape[1:])
    params = MixParams(lam=lam.contiguous(), weight=weight, box=None, shift=batch_size // 2, size=(height, width))
    return _Drawn(params, params.mixed, None)


def draw_mix(
    phase: Phase,
    batch_size: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    host_generator: torch.Generator | None = None,
) -> MixParams | None:
    """Draw one batch's Mixup/CutMix parameters on ``device`` (``None`` if the phase does not mix).

    Args:
        phase: The phase in force; its alphas, ``mix_prob``, ``switch_prob`` and ``mode`` apply.
        batch_size: B.
        height: H of the input (CutMix boxes), at least 1; 1 for non-image input.
        width: W of the input, at least 1; 1 for non-image input.
        generator: A generator on ``device`` for the per-sample draws.
        device: Where to draw; defaults to the generator's device.
        host_generator: A CPU generator for the per-batch Mixup-or-CutMix choice (when
            both alphas are > 0). Without one, a CPU ``generator`` is used; a CUDA one
            draws the choice on the device and blends both, which costs more.

    Raises:
        TypeError: If ``phase`` is not a :class:`Phase`, ``generator`` not a ``torch.Generator``,
            or ``host_generator`` neither ``None`` nor a ``torch.Generator``.
        ValueError: If ``host_generator`` is not on the CPU, ``generator`` not on ``device``, ``batch_size`` is
            negative, or ``height`` or ``width`` is below 1.

    Note:
        CutMix λ is the kept area: ``1 - box_area / (H * W)``. Sample ``i`` is paired with
        sample ``(i + B // 2) % B``, so a batch of one sample has no partner and is not mixed.
    """
    _check_draw_args(phase, generator, host_generator)
    batch_size = cast(int, check_int("batch_size", batch_size, minimum=0))
    height = cast(int, check_int("height", height, minimum=1))
    width = cast(int, check_int("width", width, minimum=1))
    if not phase.mixes or batch_size < 2:
        return None
    device = check_device("device", device) if device is not None else generator.device
    if device.type != generator.device.type:
        raise ValueError(f"generator should be on device {device} (where the draws are made), got a generator on "
                         f"{generator.device}")
    drawn = _draw(phase, batch_size, height, width, generator=generator, device=device, host_generator=host_generator)
    return None if drawn is None else drawn.params


def mix_size(x: Tensor, phase: Phase) -> tuple[int, int]:
    """The ``(H, W)`` that CutMix boxes are drawn for; ``(1, 1)`` for non-image input.

    Raises:
        ValueError: If the phase uses CutMix and ``x`` is not ``(B, C, H, W)`` with ``H`` and ``W`` at least 1, or
            looks channels-last: more than 4 channels and a width of 1, 3 or 4 (``(B, H, W, C)`` images).
    """
    if x.dim() == 4:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if phase.cutmix_alpha > 0 and min(height, width) < 1:  # no pixel to centre a box on (as draw_mix's check)
            raise ValueError(f"CutMix needs (B, C, H, W) input with H and W at least 1, got input of shape "
                             f"{tuple(x.shape)}")
        hint = channels_last_hint("x", x.shape) if phase.cutmix_alpha > 0 else ""
        if hint:  # boxes would be cut across W and C
            raise ValueError(f"CutMix needs (B, C, H, W) input, got input of shape {tuple(x.shape)}{hint}")
        return height, width
    if phase.cutmix_alpha > 0:
        raise ValueError(f"CutMix needs (B, C, H, W) input, got input of shape {tuple(x.shape)}")
    return 1, 1


def _blend(
    x: Tensor,
    shift: int,
    *,
    weight: Tensor | None = None,
    box: Tensor | None = None,
    complement: bool = False,
    exact: bool = True,
    out: Tensor | None = None,
) -> Tensor:
    """``out[i] = x[i]`` blended with ``x[(i + shift) % B]``, without a rolled copy of ``x``.

    With ``weight``: ``lerp(x[i], partner, weight[i])`` (``1 - weight[i]`` if ``complement``), and ``x[i]`` itself
    where the partner's weight is exactly 0 (NOTE [ Exact unmixed samples ]; ``exact=False``: values known finite,
    where lerp gives that too). With ``box``
    (``(B, 4)``, ``(B, C, H, W)`` input): the partner's pixels inside ``box[i]``, ``x[i]``'s outside. Integer input
    is read as float32. Writes into ``out`` when given (already checked by :func:`_check_out`), else into a new tensor.
    A blend on CUDA is one fused kernel (``_mix_kernel.blend``); elsewhere two ``lerp`` or ``where`` calls on views
    (NOTE [ Which blends are fused ]).
    """
    if out is None:
        out = torch.empty_like(x, dtype=x.dtype if x.is_floating_point() else torch.float32)
    # NOTE [ Which blends are fused ]
    # On an H200 (2026-11-28; batch 256, 3x224x224, 1000 classes) Mixup with its input and label blends in the
    # fused kernel ran at 0.94M img/s, and at 1.25M img/s as lerp calls on views (a bare lerp: 1.76M): a call is
    # bound by host time, and a launch through Triton's Python launcher costs more of it than the two PyTorch
    # launches it replaces, a weight blend being one pass over the memory either way. A box blend (CutMix) as
    # PyTorch ops is a mask and two where calls: there the kernel won (1.68x). Weight blends were then lerp calls;
    # they are fused too since unmixed samples are copied exactly (NOTE [ Exact unmixed samples ]), which the kernel
    # does in registers and lerp calls would need a where call for (a third launch and another pass). With class
    # indices on CUDA nothing is blended here at all: one kernel makes the parameters, the mixed input and the mixed
    # soft targets (NOTE [ One launch per mix ], in _mix); this is for the other calls (apply_mix, soft-row
    # targets, and where that kernel does not run).
    if (box is not None or exact) and _fused("blend", x.device):
        if _fused_kernels.run("blend", x, out, shift=shift, weight=weight, box=box, complement=complement) is not None:
            return out
    if not x.is_floating_point():
        x = x.float()
    b = x.shape[0]
    if shift == 0:
        out.copy_(x)
        return out
    k = b - shift
    if box is not None:
        mask = _box_mask(box, x.shape[-2], x.shape[-1])
        torch.where(mask[:k], x[shift:], x[:k], out=out[:k])
        torch.where(mask[k:], x[:shift], x[k:], out=out[k:])
    else:
        w = cast(Tensor, weight)
        w = (w.reshape(b, *([1] * (x.dim() - 1))) if w.shape[1:].numel() == 1 else w).to(x.dtype)
        if complement:  # lerp(partner, own, w) = w own + (1 - w) partner: no 1 - w to compute
            torch.lerp(x[shift:], x[:k], w[:k], out=out[:k])
            torch.lerp(x[:shift], x[k:], w[k:], out=out[k:])
        else:
            torch.lerp(x[:k], x[shift:], w[:k], out=out[:k])
            torch.lerp(x[k:], x[:shift], w[k:], out=out[k:])
        # NOTE [ Exact unmixed samples ]
        # A sample left unmixed (λ = 1: its coin said no, or a Beta draw below float32's resolution at 1; a pixel
        # outside a device-chosen CutMix box) has a partner weight of 0 (the draws make it so), and lerp gives
        # x + 0 * (partner - x): NaN where the partner holds a NaN or an inf. A corrupt partner would make a clean,
        # unmixed sample's input (and so its loss, which the table keeps) non-finite. So such samples are copied:
        # the kernels choose in registers (and do not read the partner they do not need); the PyTorch ops copy the
        # rows with such a weight on the CPU (found without a sync; nothing to do where there are none; at
        # mix_prob=0.5 on 256 x 3 x 224^2, 4-14 % more time with a new output, about 40-55 % with out=, against
        # 80-90 % for a where call over the batch), and on a GPU without the kernel, or for a weight per pixel,
        # take a where call.
        unmixed = 1.0 if complement else 0.0
        if exact and w.is_cpu and w.shape[1:].numel() == 1:
            for i in (w.reshape(b) == unmixed).nonzero().flatten().tolist():  # no allocation, no pass where none
                out[i].copy_(x[i])
        elif exact:
            torch.where(w == unmixed, x, out, out=out)
    return out


def _check_input(x: Tensor) -> None:
    """The input of a mix should be a real number tensor that does not require grad."""
    if x.is_complex() or x.dtype == torch.bool:
        # A complex input would lose its imaginary part in the float blend, a bool one become 0/1 floats unasked.
        raise TypeError(f"x should be a float or integer tensor to mix, got x of dtype {x.dtype}")
    check_no_grad("x", x, "mixing")


def _may_overlap(t: Tensor) -> bool:
    """Whether two elements of ``t`` may share memory: unless each stride, from the smallest up, steps over the
    whole extent of the dimensions of smaller strides (true of any dense layout and of slices of one)."""
    extent = 0
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1):
        if stride <= extent:
            return True
        extent += stride * (size - 1)
    return False


def _check_out(out: Tensor, x: Tensor) -> None:
    """``out`` must be a separate tensor with the mixed input's shape, float dtype and device."""
    if not isinstance(out, Tensor):
        raise TypeError(f"out should be a Tensor or None, got out of type {type(out).__name__}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    if out.shape != x.shape or out.dtype != dtype or out.device != x.device:
        raise ValueError(
            f"out should have shape {tuple(x.shape)}, dtype {dtype} and device {x.device} (those of the mixed "
            f"input), got out of shape {tuple(out.shape)}, dtype {out.dtype} and device {out.device}"
        )
    if _may_overlap(out):
        # An expanded tensor, or strides that interleave: several elements would be written to the same memory.
        raise ValueError(f"out should not overlap itself, got out with strides {out.stride()} for shape {tuple(out.shape)}")
    check_no_grad("out", out, "mixing")  # a kernel would write into it unseen by autograd; the out= ops would fail
    if out.numel() and out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():  # empty: both null
        # Each sample is blended with another one: writing over the input would read overwritten partners.
        raise ValueError("out should not share memory with the input x, got out sharing x's storage")


def _mix_input(x: Tensor, params: MixParams, *, out: Tensor | None) -> Tensor:
    """The input half of :func:`apply_mix`, its arguments checked before anything is written."""
    _check_input(x)
    if out is not None:
        _check_out(out, x)
    weight, box = params.weight, params.box
    if (box is not None or (weight is not None and weight.shape[-2:] != (1, 1))) and (
        x.dim() != 4 or tuple(x.shape[-2:]) != params.size
    ):
        raise ValueError(
            f"CutMix needs (B, C, H, W) input matching the drawn boxes' (H, W) = {params.size}, got input of shape "
            f"{tuple(x.shape)}"
        )
    return _blend(x, params.shift, weight=weight, box=box, out=out)


def apply_mix(
    x: Tensor, soft_targets: Tensor, params: MixParams, *, out: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Apply drawn parameters. Returns new ``(input, targets)``; the arguments are not modified.

    Integer inputs are converted to float32 on the same scale before mixing.
    For non-image inputs (fewer than 4 dims) only Mixup weights apply.
    A sample left unmixed (λ = 1) comes out as it went in, even where its partner holds a NaN or an inf.

    Args:
        x: ``(B, ...)`` input.
        soft_targets: ``(B, num_classes)`` float rows.
        params: From :func:`draw_mix`.
        out: Optional buffer for the mixed input, reused across steps to save an
            allocation (on the CPU a fresh tensor costs a pass of page faults; CUDA's
            caching allocator makes this moot). It must not share memory with ``x``
            and must not be in use elsewhere: its old contents are overwritten.

    Raises:
        TypeError: If ``x`` or ``soft_targets`` is not a tensor, or ``params`` not a :class:`MixParams`.
        ValueError: If ``x`` or ``soft_targets`` requires grad (mixing is not differentiable; pass
            ``x.detach()``), ``x`` or ``soft_targets`` is not of the batch size the parameters were drawn for,
            ``params.box`` (on the CPU) holds edges that are not whole pixels, or ``out`` has the wrong shape,
            dtype or device, or shares memory with ``x``.
    """
    if not isinstance(params, MixParams):
        raise TypeError(f"params should be a MixParams (from draw_mix), got params of type {type(params).__name__}")
    n = int(params.lam.shape[0])
    for name, value in (("x", x), ("soft_targets", soft_targets)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} should be a Tensor, got {name} of type {type(value).__name__}")
        if value.dim() == 0 or value.shape[0] != n:
            raise ValueError(f"{name} should have the batch size the parameters were drawn for ({n}) as its first "
                             f"dimension, got {name} of shape {tuple(value.shape)}")
    if soft_targets.dim() != 2:
        raise ValueError(f"soft_targets should be (B, num_classes) rows, got soft_targets of shape "
                         f"{tuple(soft_targets.shape)}")
    check_no_grad("soft_targets", soft_targets, "mixing")
    if params.box is not None:
        check_pixel_edges("params.box", params.box)
    return _apply(x, soft_targets, params, out=out)


def _apply(
    x: Tensor, soft_targets: Tensor, params: MixParams, *, out: Tensor | None, finite_rows: bool = False
) -> tuple[Tensor, Tensor]:
    """:func:`apply_mix` after its checks; ``finite_rows``: the soft targets are known finite (made from integers,
    or rows :func:`to_soft_targets` checked on the CPU), so their blend needs no copies of unmixed rows."""
    mixed_x = _mix_input(x, params, out=out)
    weight = params.weight
    if weight is not None and weight.shape[1:].numel() == 1:  # Mixup: the input's weight is the label's, 1 - λ
        mixed_y = _blend(soft_targets, params.shift, weight=weight, exact=not finite_rows)
    else:
        mixed_y = _blend(soft_targets, params.shift, weight=params.lam, complement=True, exact=not finite_rows)
    return mixed_x, mixed_y


def _is_indices(target: Tensor) -> bool:
    """Whether ``target`` is ``(B,)`` integer class indices."""
    return target.dim() == 1 and not target.is_floating_point() and target.dtype != torch.bool


def _check_target(target: Tensor, num_classes: int, label_smoothing: float) -> tuple[int, float]:
    """Check :func:`to_soft_targets`'s arguments (class indices' range on the CPU); returns the checked numbers."""
    if not isinstance(target, Tensor):
        raise TypeError(f"target should be a Tensor, got target of type {type(target).__name__}")
    num_classes = cast(int, check_int("num_classes", num_classes, minimum=1))
    label_smoothing = cast(float, check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True))
    if _is_indices(target) and target.device.type == "cpu" and target.numel():
        lo, hi = (int(v) for v in torch.aminmax(comparable(target)))
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"target should hold class indices in [0, {num_classes}) (num_classes={num_classes}), "
                f"got values in [{lo}, {hi}]"
            )
    return num_classes, label_smoothing


def to_soft_targets(target: Tensor, num_classes: int, *, label_smoothing: float = 0.0) -> Tensor:
    """Turn class indices, one-hot or soft rows into smoothed float32 rows of ``num_classes``.

    A row is smoothed as ``row * (1 - s) + s / num_classes``; a single column (``num_classes=1``, one binary
    score) towards 0.5, as ``row * (1 - s) + s / 2``.

    Args:
        target: ``(B,)`` integer class indices, or ``(B, num_classes)`` rows (integer one-hot or multi-hot rows,
            or non-negative float rows).
        num_classes: The rows' width.
        label_smoothing: ``s`` in ``[0, 1)``.

    Returns:
        ``(B, num_classes)`` float32 rows.

    Raises:
        ValueError: For targets out of ``[0, num_classes)``, integer rows holding other values than 0 and
            1, or float rows holding a negative or non-finite value (all checked when the targets are on the
            CPU, so the check never synchronises a GPU), rows of the wrong width, ``num_classes < 1`` or
            ``label_smoothing`` outside ``[0, 1)``.
        TypeError: For targets that are not a tensor, class indices that are not integers, or a ``num_classes``
            that is not an int.
    """
    num_classes, label_smoothing = _check_target(target, num_classes, label_smoothing)
    if _is_indices(target):
        # Smoothing folded into the fill and the scattered value: two kernels, whatever the smoothing.
        off, hot = _fused_kernels.smoothing_values(label_smoothing, num_classes)
        soft = torch.full((target.shape[0], num_classes), off, dtype=torch.float32, device=target.device)
        return soft.scatter_(1, target.long().unsqueeze(1), hot)
    if target.dim() == 1:
        raise TypeError(
            f"target of shape (B,) should hold integer class indices, got target of dtype {target.dtype}; pass "
            "indices as an integer tensor, or rows of shape (B, num_classes)"
        )
    if target.dim() != 2:
        raise ValueError(
            "target should be class indices of shape (B,) or rows of shape (B, num_classes), "
            f"got shape {tuple(target.shape)} and dtype {target.dtype}"
        )
    if target.shape[1] != num_classes:
        column = target.shape[1] == 1 and not target.is_floating_point()  # (B, 1) indices, as torch.tensor([label])
        raise ValueError(
            f"target rows should have num_classes={num_classes} columns, got target of shape {tuple(target.shape)}"
            + (f" and dtype {target.dtype}: class indices in a column? pass them as shape (B,), target.squeeze(1)"
               if column else "")
        )
    if not target.is_floating_point() and target.device.type == "cpu" and target.numel():
        # Integer rows are one-hot or multi-hot; anything else is likely indices with a trailing dimension.
        lo, hi = (int(v) for v in torch.aminmax(comparable(target)))
        if lo < 0 or hi > 1:
            raise ValueError(
                f"integer target rows should hold only 0 and 1 (one-hot or multi-hot), got values in [{lo}, {hi}] "
                f"in target of shape {tuple(target.shape)}; pass class indices as shape (B,)"
            )
    if target.is_floating_point() and target.device.type == "cpu" and target.numel():
        # Rows are mixed linearly: a NaN or negative weight would spread to the partner's row.
        bad = ~torch.isfinite(target).all(1) | (target < 0).any(1)
        if bool(bad.any()):
            raise ValueError(
                f"target rows should be finite and non-negative, got rows {target[bad][:2].tolist()} at batch "
                f"positions {bad.nonzero().flatten()[:5].tolist()}"
            )
    soft = target.to(torch.float32)
    if label_smoothing > 0:
        soft = soft * (1.0 - label_smoothing) + _fused_kernels.smoothing_values(label_smoothing, num_classes)[0]
    return soft


def mix_batch(
    x: Tensor,
    target: Tensor,
    phase: Phase,
    *,
    num_classes: int,
    generator: torch.Generator,
    host_generator: torch.Generator | None = None,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Mix one batch as ``phase`` says: the standalone form of what the loader does.

    Args:
        x: ``(B, ...)`` input; CutMix needs ``(B, C, H, W)``.
        target: Class indices ``(B,)`` or rows ``(B, num_classes)``.
        phase: The phase (alphas, probabilities, mode, label smoothing).
        num_classes: Number of classes of the soft targets.
        generator: A generator on ``x``'s device.
        host_generator: A CPU generator for per-batch choices (see :func:`draw_mix`).
        out: Optional reused buffer for the mixed input (see :func:`apply_mix`). When
            given, the returned input is always ``out``, a copy of ``x`` if the phase
            does not mix.

    Returns:
        ``(mixed_input, soft_targets, mixed)``, ``mixed`` a ``(B,)`` bool mask. Integer input comes out as
        float32 on its own scale whenever the phase mixes, whether or not this batch was (a batch of one sample
        has no partner), so a loop sees one input dtype.

    Raises:
        TypeError: If ``x`` is not a tensor, ``phase`` not a :class:`Phase`, ``generator`` not a
            ``torch.Generator`` (``None`` included: the global RNG is never used),
            ``host_generator`` neither ``None`` nor a ``torch.Generator``, or ``target`` neither class indices
            (an integer tensor) nor soft rows (a float ``(B, num_classes)`` tensor), as :func:`to_soft_targets`
            says.
        ValueError: If ``target``'s batch size or device differs from ``x``'s, ``generator`` is not on
            ``x``'s device, ``host_generator`` is not on the CPU, ``x`` or ``target`` requires grad (mixing is
            not differentiable: its CUDA kernels have no backward; soft rows from a teacher model: pass
            ``target.detach()``), the phase uses CutMix and ``x`` is not ``(B, C, H, W)`` (:func:`mix_size`), or
            as :func:`to_soft_targets` and :func:`apply_mix` say.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x should be a Tensor, got x of type {type(x).__name__}")
    _check_draw_args(phase, generator, host_generator)
    if generator.device.type != x.device.type:  # as draw_mix; torch's own error would name neither argument
        raise ValueError(f"generator should be on x's device ({x.device}), got a generator on {generator.device}")
    if isinstance(target, Tensor) and target.device != x.device:  # the soft rows are blended by the input's draws
        raise ValueError(f"target should be on x's device ({x.device}), got target on {target.device}")
    if isinstance(target, Tensor) and (x.dim() == 0 or target.dim() == 0 or target.shape[0] != x.shape[0]):
        raise ValueError(
            f"target should have x's batch size as its first dimension, got x of shape {tuple(x.shape)} and "
            f"target of shape {tuple(target.shape)}"
        )
    mixed_x, soft, mixed = _mix(
        x, target, phase, num_classes=num_classes, generator=generator, host_generator=host_generator, out=out
    )
    if mixed is None:
        unmixed = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if out is None:
            return (x.float() if phase.mixes and not x.is_floating_point() else x), soft, unmixed
        _check_out(out, x)
        return out.copy_(x), soft, unmixed
    return mixed_x, soft, mixed


def _mix(
    x: Tensor,
    target: Tensor,
    phase: Phase,
    *,
    num_classes: int,
    generator: torch.Generator,
    host_generator: torch.Generator | None,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Soft targets, then the draw and the mixing: ``(input, soft targets, mixed)``; ``mixed`` is None (and the
    input ``x`` itself, ``out`` unused) where the batch is not mixed.

    Class indices on the input's device go to the fused kernels with the draw (CUDA): one launch makes the
    parameters, the mixed input and the mixed soft targets (NOTE [ One launch per mix ]).
    """
    _check_input(x)  # whether or not this phase mixes: a run does not fail epochs later, when one does
    if isinstance(target, Tensor):
        check_no_grad("target", target, "mixing")  # as x: the soft rows' out= blends would fail, CUDA's drop the grad
    fused = (isinstance(target, Tensor) and _is_indices(target) and target.device == x.device
             and _fused("mix_params", x.device))
    if fused:
        num_classes, _ = _check_target(target, num_classes, phase.label_smoothing)
        soft = None
    else:
        soft = to_soft_targets(target, num_classes, label_smoothing=phase.label_smoothing)
    h, w = mix_size(x, phase)
    b = x.shape[0]
    raw = None
    if fused and phase.mixes and b >= 2 and x.numel() and _fused("mix", x.device):
        # NOTE [ One launch per mix ]
        # Every launch costs host time, the bound of mixing on a GPU (NOTE [ Few kernels per CutMix draw ]): here
        # the raw draws go to one kernel that makes each sample's parameters where it blends the sample's pixels,
        # and writes λ, the boxes or weights, the mixed flags and the mixed soft targets beside. A Mixup call is
        # then 2 launches (the Gamma pairs, the kernel), a CutMix call 3 (and the box centres), a coin one more.
        # Where the kernel does not run, mix_params and the blend take the same draws (raw): the same batch.
        raw = _raw_draws(phase, b, h, w, generator=generator, device=x.device, host_generator=host_generator)
        if raw is not None:
            if out is not None:
                _check_out(out, x)
            else:
                out = torch.empty_like(x, dtype=x.dtype if x.is_floating_point() else torch.float32)
            made = _fused_kernels.run(
                "mix", x, out, raw.draw, shift=raw.shift, coin=raw.coin, prob=phase.mix_prob, pixel=raw.pixel,
                target=target, num_classes=num_classes, label_smoothing=phase.label_smoothing,
            )
            if made is not None:
                _, _, mixed, made_soft = made
                return out, cast(Tensor, made_soft), mixed  # soft targets made: target was given
    drawn = _draw(phase, b, h, w, generator=generator, device=x.device, host_generator=host_generator,
                  target=target if fused else None, num_classes=num_classes, raw=raw)
    if drawn is not None and drawn.soft is not None:
        return _mix_input(x, drawn.params, out=out), drawn.soft, drawn.mixed
    if soft is None:
        soft = to_soft_targets(target, num_classes, label_smoothing=phase.label_smoothing)
    if drawn is None:
        return x, soft, None
    finite = target.device.type == "cpu" or not target.is_floating_point()  # checked, or made from integers
    mixed_x, mixed_y = _apply(x, soft, drawn.params, out=out, finite_rows=finite)
    return mixed_x, mixed_y, drawn.mixed
