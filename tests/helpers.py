"""Tiny datasets and loops used across the tests."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class Images(Dataset):
    """``n`` deterministic 3×8×8 float images; sample i's pixels encode i; label i % classes."""

    def __init__(self, n: int = 64, classes: int = 4) -> None:
        self.n, self.classes = n, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        x = torch.full((3, 8, 8), float(i)) + torch.arange(64, dtype=torch.float32).view(1, 8, 8) / 1000
        return x, i % self.classes


class Counting(Dataset):
    """Returns ``(tensor([i]), i % classes)`` and counts loads per index (single process)."""

    def __init__(self, n: int = 50, classes: int = 5) -> None:
        self.n, self.classes = n, classes
        self.loads = [0] * n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.loads[i] += 1
        return torch.tensor([float(i)]), i % self.classes


def one_ahead(loader):
    """What a prefetching fetcher (timm's PrefetchLoader around the loader; Lightning's for a loader without a
    len()) does: batch k + 1 is taken before the step on batch k."""
    it = iter(loader)
    current = next(it)
    for upcoming in it:
        yield current
        current = upcoming
    yield current


def ids_of(x: torch.Tensor) -> list[int]:
    """The sample ids encoded by :class:`Images` / :class:`Counting` inputs (unmixed samples)."""
    flat = x.reshape(x.shape[0], -1)[:, 0]
    return [int(round(v)) for v in flat.tolist()]


class CountOps:
    """Context manager listing the non-view ATen ops run inside it (each one a kernel launch on a GPU)."""

    def __enter__(self) -> list[str]:
        from torch.utils._python_dispatch import TorchDispatchMode

        ops: list[str] = []

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                if not func.is_view and func.overloadpacket.__name__ not in ("_local_scalar_dense", "scalar_tensor"):
                    ops.append(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()
        self._mode.__enter__()
        return ops

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)


class CountLaunches:
    """Context manager listing the fused Triton kernels run inside it (``enlight_data._fused.run`` calls).

    The tensor ops a launcher runs itself (allocations, and the interpreter's own work under ``TRITON_INTERPRET``) are
    hidden from an enclosing :class:`CountOps`: a launch counts once, here.
    """

    def __enter__(self) -> list[str]:
        import enlight_data._fused as fused
        from torch.utils._python_dispatch import _disable_current_modes

        names: list[str] = []
        run = self._run = fused.run

        def counted(name: str, *args: object, **kwargs: object) -> object:
            names.append(name)
            with _disable_current_modes():
                return run(name, *args, **kwargs)

        fused.run = counted
        return names

    def __exit__(self, *exc: object) -> None:
        import enlight_data._fused as fused

        fused.run = self._run


# Set at run time by a test: forked workers inherit the new value, spawned ones (which import this module) see 0.
PARENT_MARK = 0.0


class EpochProbe(Dataset):
    """Rows ``[i, current_epoch(), 1 in a removal phase else 0, a draw of torch's global RNG, PARENT_MARK]``,
    label ``i % 4``.

    Defined at module level so that workers started by spawn or forkserver can import it.
    """

    def __init__(self, n: int = 24) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import enlight_data as ed

        removing = float(ed.current_phase().drop_high_loss > 0)
        row = [float(i), float(ed.current_epoch()), removing, float(torch.rand(())), PARENT_MARK]
        return torch.tensor(row), i % 4


def decode_marked(sample: dict) -> tuple[torch.Tensor, int]:
    """A stream ``decode=``: the PNG as ``rgb8`` decodes it, and the label plus ``10 * PARENT_MARK``."""
    from enlight_data import _codec

    return _codec.decode(sample["png"], gray=False), int(sample["cls"]) + 10 * int(PARENT_MARK)
