"""enlight_data: enlightenment-period data scheduling for any PyTorch training loop.

Implements the data-side strategies of "Enlightenment Period Improving DNN
Performance" (arXiv 2504.01737): Mixup Pause, Alpha Boost and High-Loss Removal,
by wrapping an existing DataLoader and loss.
"""

from .augment import AugmentParams, GpuAugment, apply_augment
from .context import current_epoch, current_phase
from .feedback import LossTable
from .loader import EnlightLoader, enlighten
from .mapstyle import SampleError
from .mixing import mix_batch
from .sampler import EnlightSampler
from .schedule import Period, Phase, Schedule, alpha_boost, high_loss_removal, mixup_pause
from .shards import ShardError, write_shards
from .streaming import stream
from .tracking import TrackedLoss

__version__ = "0.1.0"

__all__ = [
    "AugmentParams",
    "EnlightLoader",
    "EnlightSampler",
    "GpuAugment",
    "LossTable",
    "Period",
    "Phase",
    "SampleError",
    "Schedule",
    "ShardError",
    "TrackedLoss",
    "alpha_boost",
    "apply_augment",
    "current_epoch",
    "current_phase",
    "enlighten",
    "high_loss_removal",
    "mix_batch",
    "mixup_pause",
    "stream",
    "write_shards",
]
