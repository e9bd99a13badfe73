"""Throughput of ``stream()``: against a plain webdataset pipeline, and with 20 % of the samples removed.

Shards of real JPEG photos (500x375 crops of scikit-learn's two sample images, re-encoded) or of Fashion-MNIST
(``--data fashion-mnist``, 28x28 grayscale) are written once with :func:`enlight_data.write_shards`. Three peers then
run full epochs, interleaved round by round in one process with the same workers, batch size, shuffle buffer and
decoder (torchvision's, uint8 CHW):

* ``webdataset``: a plain ``wds.DataPipeline`` (shard list, split_by_worker, tarfile_to_samples, shuffle, map
  decode, batched) in a ``wds.WebLoader``;
* ``stream``: ``ed.stream()`` over the same shards, nothing removed;
* ``stream_removed``: ``ed.stream()`` with ``high_loss_removal(fraction=0.2)``: 20 % of the ids are excluded and
  never decoded.

Reported ratios are paired, the median over rounds of the two peers' epoch times within a round (this machine's
speed drifts between rounds): ``stream / webdataset`` (goal <= 1.05) and ``stream_removed / stream`` (goal <= 0.85);
the ratios of the medians are kept beside them. On CUDA (or with ``--decode-compare``) the photos are also streamed
to the device and cropped to one 224 px batch by ``GpuAugment``: decoded in the workers (``stream_augment``) and, on CUDA, decoded on the GPU
(``decode="gpu"``, ``stream_gpu_decode_augment``); their img/s ratio is reported. On CUDA (or with
``--transport-compare``) decode="gpu"'s transport is timed alone: raw JPEG bytes reach the main process as one
buffer per batch (``raw_bytes_packed``, what ``stream`` does) or as one tensor per image (``raw_bytes_listed``).
Run ``python -m benchmarks.streaming [--quick] [--data photos|fashion-mnist] [--device cpu|cuda] [--decode-compare]
[--transport-compare]`` (or ``python benchmarks/streaming.py ...``); ``--device`` is ``cuda`` when CUDA is present.
The results go to ``benchmarks/results/streaming.json``, or ``benchmarks/results/quick/`` with ``--quick``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `enlight_data` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import enlight_data as ed
from benchmarks.common import default_out, paired_ratio

__all__ = ["main"]

NAME = "streaming"
CROP_H, CROP_W = 375, 500


class PhotoCrops:
    """``n`` 500x375 crops of scikit-learn's sample photos (china, flower), at offsets from a seeded generator."""

    def __init__(self, n: int, *, seed: int = 0) -> None:
        from sklearn.datasets import load_sample_images

        images = [torch.from_numpy(im.copy()).permute(2, 0, 1).contiguous() for im in load_sample_images().images]
        self.images = images
        g = torch.Generator().manual_seed(seed)
        h, w = images[0].shape[1:]
        self.offsets = torch.stack(
            [torch.randint(0, h - CROP_H + 1, (n,), generator=g), torch.randint(0, w - CROP_W + 1, (n,), generator=g)],
            dim=1,
        ).tolist()
        self.flips = torch.randint(0, 2, (n,), generator=g).tolist()
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        y0, x0 = self.offsets[i]
        crop = self.images[i % 2][:, y0 : y0 + CROP_H, x0 : x0 + CROP_W]
        return (crop.flip(-1) if self.flips[i] else crop).contiguous(), i % 10


class FashionMNIST:
    """The first ``n`` Fashion-MNIST training images as uint8 ``(1, 28, 28)``."""

    def __init__(self, n: int) -> None:
        from benchmarks.idx import FASHION_MNIST_DIR, read_idx

        self.x = read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz")[:n].unsqueeze(1)
        self.y = read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz")[:n].long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _plain_webdataset(urls: list[str], *, batch_size: int, workers: int, buffer: int, decode: str) -> Any:
    """The peer: a plain webdataset pipeline with the same decoder and collation as stream()."""
    import webdataset as wds

    from enlight_data.streaming import _ImageDecoder, _stack

    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.shuffle(bufsize=buffer, initial=buffer, rng=random.Random(0)),
        wds.map(_ImageDecoder(decode)),
        wds.batched(batch_size, collation_fn=_stack, partial=True),
    )
    return wds.WebLoader(pipeline, batch_size=None, num_workers=workers, persistent_workers=workers > 0)


def _raw_webdataset(urls: list[str], *, batch_size: int, workers: int, buffer: int, packed: bool) -> Any:
    """decode='gpu''s transport alone: raw JPEG bytes to the main process, one buffer per batch or one per image."""
    import webdataset as wds

    from enlight_data.streaming import _packed, _raw_jpeg

    def listed(items: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        # The former transport: a list of per-image tensors, one shared-memory segment each.
        return [x for x, _ in items], torch.tensor([y for _, y in items], dtype=torch.int64)

    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.shuffle(bufsize=buffer, initial=buffer, rng=random.Random(0)),
        wds.map(_raw_jpeg),
        wds.batched(batch_size, collation_fn=_packed if packed else listed, partial=True),
    )
    return wds.WebLoader(pipeline, batch_size=None, num_workers=workers, persistent_workers=workers > 0)


def _raw_epoch(loader: Any, packed: bool) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and images of one pass that ends with each batch's per-image byte tensors."""
    from enlight_data.streaming import _unpacked

    count = 0
    cpu = _cpu_seconds()
    start = time.perf_counter()
    for raw, _ in loader:
        count += len(_unpacked(raw) if packed else raw)
    return time.perf_counter() - start, _cpu_seconds() - cpu, count


def _cpu_seconds() -> float:
    """CPU time of this process, its live children (persistent DataLoader workers, from /proc) and reaped ones."""
    me, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + reaped.ru_utime + reaped.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    parent = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == parent:  # fields[1] is the ppid; utime and stime are fields 14 and 15 of stat
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _epoch(iterable: Any, device: torch.device, on_batch: Callable[[Any], None] | None = None
           ) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (workers included) and samples of one pass.

    Each batch is moved to ``device``; the device is synchronised inside the timed region. The CPU time includes
    the persistent workers' (read from /proc), so it is a measure of work that other jobs on the machine do not
    inflate the way they inflate wall time.
    """
    count = 0
    cpu = _cpu_seconds()
    start = time.perf_counter()
    for x, _ in iterable:
        if on_batch is not None:  # before the move: the stream's loss table is where its batches are made
            on_batch(x)
        x = x.to(device, non_blocking=True)
        count += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, _cpu_seconds() - cpu, count


def _summary(times: list[float], cpu: list[float], samples: list[int]) -> dict[str, Any]:
    rates = [n / t for n, t in zip(samples, times)]
    return {
        "epoch_s": times,
        "cpu_s": cpu,
        "samples": samples,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "median_cpu_s": statistics.median(cpu),
        "median_samples_per_s": statistics.median(rates),
    }


def _ratios(times: dict[str, list[float]], cpu: dict[str, list[float]],
            rates: dict[str, list[float]]) -> dict[str, float]:
    """The reported ratios from each peer's per-round epoch times (wall and CPU seconds) and rates (samples/s).

    The headline ratios are paired (:func:`benchmarks.common.paired_ratio`): the median over rounds of the two peers'
    times within a round, since both share the round's drift. The ratios of the medians (``ratio_of_medians_*``) and
    of the minima (``min_ratio_*``, the runs least disturbed by other jobs) are kept beside them.
    """
    out: dict[str, float] = {}
    for key, slow, fast in (("stream_vs_webdataset", "stream", "webdataset"),
                            ("removed_vs_full", "stream_removed", "stream")):
        out[f"ratio_{key}"] = paired_ratio(times[slow], times[fast])
        out[f"cpu_ratio_{key}"] = paired_ratio(cpu[slow], cpu[fast])
        out[f"ratio_of_medians_{key}"] = statistics.median(times[slow]) / statistics.median(times[fast])
        out[f"cpu_ratio_of_medians_{key}"] = statistics.median(cpu[slow]) / statistics.median(cpu[fast])
        out[f"min_ratio_{key}"] = min(times[slow]) / min(times[fast])
    # Speed-ups, in samples per second (paired too).
    for key, fast, slow in (("packed_vs_listed_transport", "raw_bytes_packed", "raw_bytes_listed"),
                            ("gpu_decode_vs_cpu_decode", "stream_gpu_decode_augment", "stream_augment")):
        if fast in rates and slow in rates:
            out[f"ratio_{key}"] = paired_ratio(rates[fast], rates[slow])
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, under a minute on 2 CPU cores")
    parser.add_argument("--data", choices=("photos", "fashion-mnist"), default="photos")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--buffer", type=int, default=1000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where batches go (default: cuda when CUDA is present, else cpu)")
    parser.add_argument("--decode-compare", action="store_true",
                        help="also time decoding + GpuAugment(224) on the device (always on with CUDA, where "
                        "decode='gpu' is timed too)")
    parser.add_argument("--transport-compare", action="store_true",
                        help="also time decode='gpu''s transport of raw JPEG bytes, one buffer per batch against "
                        "one per image (always on with CUDA)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results JSON (default benchmarks/results/{NAME}.json, or results/quick/ with --quick)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON; return the results."""
    args = _parser().parse_args(argv)
    out = args.out or default_out(NAME, args.quick)
    device = torch.device(args.device)
    photos = args.data == "photos"
    n = args.samples or ((512 if args.quick else 2048) if photos else (8192 if args.quick else 60000))
    rounds = args.rounds or (3 if args.quick else 7)
    shards = 8
    decode = "rgb8" if photos else "l8"

    with tempfile.TemporaryDirectory() as tmp:
        dataset = PhotoCrops(n) if photos else FashionMNIST(n)
        t0 = time.perf_counter()
        index = ed.write_shards(dataset, f"{tmp}/bench-%04d.tar", maxcount=-(-len(dataset) // shards),
                                image_format="jpg", quality=90, progress=False)
        write_s = time.perf_counter() - t0
        meta = json.loads(Path(index).read_text())
        urls = [f"{tmp}/{s['url']}" for s in meta["shards"]]
        total_bytes = sum(Path(u).stat().st_size for u in urls)
        common = dict(batch_size=args.batch_size, num_workers=args.workers, shuffle_buffer=args.buffer,
                      decode=decode, persistent_workers=args.workers > 0, device=None)
        full = ed.stream(index, ed.Schedule(10**6), **common)  # the same loader, nothing removed
        removed = ed.stream(index, ed.high_loss_removal(10**6, fraction=0.2), **common)
        plain = _plain_webdataset(urls, batch_size=args.batch_size, workers=args.workers, buffer=args.buffer,
                                  decode=decode)

        def record(x: torch.Tensor) -> None:
            # A fixed pseudo-random per-sample "loss" (a hash of a corner patch, so it does not follow how costly
            # the image is to decode): every epoch drops the same 20 %.
            corner = x[:, :, :4, :4].to(torch.int64).flatten(1)
            removed.record(((corner * torch.arange(1, corner.shape[1] + 1)).sum(1) * 2654435761 % 1000003).float())

        peers: dict[str, Callable[[], tuple[float, float, int]]] = {
            "webdataset": lambda: _epoch(plain, device),
            "stream": lambda: _epoch(full, device),
            "stream_removed": lambda: _epoch(removed, device, record),
        }
        if photos and (args.decode_compare or device.type == "cuda"):
            # Decoding compared, both ending in one (B, 3, 224, 224) batch on the device: JPEGs decoded by the
            # workers, moved, then GpuAugment; and (CUDA only) raw bytes decoded on the GPU with nvjpeg, then
            # GpuAugment's crop of the list of images into one batch.
            on_device = dict(common, device=device)
            cpu_decoded = ed.stream(index, ed.Schedule(10**6),  # nothing removed
                                    **dict(on_device, augment=ed.GpuAugment(224)))
            peers["stream_augment"] = lambda: _epoch(cpu_decoded, device)
            if device.type == "cuda":
                gpu_decoded = ed.stream(index, ed.Schedule(10**6),
                                        **dict(on_device, decode="gpu", augment=ed.GpuAugment(224)))
                peers["stream_gpu_decode_augment"] = lambda: _epoch(gpu_decoded, device)
        if photos and (args.transport_compare or device.type == "cuda"):
            # decode="gpu" ships raw JPEG bytes from the workers: one buffer per batch against one per image.
            for packed, name in ((False, "raw_bytes_listed"), (True, "raw_bytes_packed")):
                raw = _raw_webdataset(urls, batch_size=args.batch_size, workers=args.workers, buffer=args.buffer,
                                      packed=packed)
                peers[name] = functools.partial(_raw_epoch, raw, packed)
        for run in peers.values():  # warm-up: worker start, page cache, first removal set
            run()
        times: dict[str, list[float]] = {k: [] for k in peers}
        cpu: dict[str, list[float]] = {k: [] for k in peers}
        samples: dict[str, list[int]] = {k: [] for k in peers}
        for r in range(rounds):
            names = list(peers) if r % 2 == 0 else list(reversed(peers))
            for name in names:
                t, c, k = peers[name]()
                times[name].append(t)
                cpu[name].append(c)
                samples[name].append(k)
        removed_fraction = removed.history[-1]["removed"] / len(dataset)

    result = {
        "benchmark": NAME,
        "quick": args.quick,
        "data": args.data,
        "samples": len(dataset),
        "image_size": [CROP_H, CROP_W] if photos else [28, 28],
        "shards": len(urls),
        "shard_bytes": total_bytes,
        "write_shards_s": write_s,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "shuffle_buffer": args.buffer,
        "decode": decode,
        "rounds": rounds,
        "removed_fraction": removed_fraction,
        "peers": {k: _summary(times[k], cpu[k], samples[k]) for k in peers},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": __import__("torchvision").__version__,
            "webdataset": __import__("webdataset").__version__,
            "enlight_data": ed.__version__,
        },
    }
    rates = {k: [n / t for n, t in zip(samples[k], times[k])] for k in peers}
    result["ratio_timing"] = "paired: median over rounds of the two peers' times within a round"
    result.update(_ratios(times, cpu, rates))
    rate = {k: v["median_samples_per_s"] for k, v in result["peers"].items()}
    result["goals"] = {
        "stream_vs_webdataset_le_1.05": result["ratio_stream_vs_webdataset"] <= 1.05,
        "removed_vs_full_le_0.85": result["ratio_removed_vs_full"] <= 0.85,
    }

    print(f"{args.data}: {len(dataset)} samples in {len(urls)} shards ({total_bytes / 1e6:.1f} MB), batch "
          f"{args.batch_size}, {args.workers} workers, buffer {args.buffer}, {rounds} rounds, device {device}")
    print(f"{'peer':<16}{'median s':>10}{'min s':>9}{'max s':>9}{'cpu s':>9}{'samples/s':>12}{'samples':>9}")
    for name, s in result["peers"].items():
        print(f"{name:<16}{s['median_s']:>10.3f}{s['min_s']:>9.3f}{s['max_s']:>9.3f}{s['median_cpu_s']:>9.3f}"
              f"{s['median_samples_per_s']:>12.0f}{s['samples'][0]:>9}")
    print("paired ratios (wall, cpu; median over rounds), ratio of medians (wall) and of minima (wall):")
    print(f"stream / webdataset      = {result['ratio_stream_vs_webdataset']:.3f} wall, "
          f"{result['cpu_ratio_stream_vs_webdataset']:.3f} cpu, "
          f"{result['ratio_of_medians_stream_vs_webdataset']:.3f} of medians, "
          f"{result['min_ratio_stream_vs_webdataset']:.3f} min wall  (goal <= 1.05)")
    print(f"20% removed / full epoch = {result['ratio_removed_vs_full']:.3f} wall, "
          f"{result['cpu_ratio_removed_vs_full']:.3f} cpu, "
          f"{result['ratio_of_medians_removed_vs_full']:.3f} of medians, "
          f"{result['min_ratio_removed_vs_full']:.3f} min wall  (goal <= 0.85; {removed_fraction:.0%} removed)")
    if "ratio_packed_vs_listed_transport" in result:
        print(f"raw JPEG bytes, one buffer per batch / one per image: "
              f"{result['ratio_packed_vs_listed_transport']:.2f}x img/s")
    if "ratio_gpu_decode_vs_cpu_decode" in result:
        print(f"decode='gpu' / decoding in {args.workers} workers, both + GpuAugment(224): "
              f"{result['ratio_gpu_decode_vs_cpu_decode']:.2f}x img/s "
              f"({rate['stream_gpu_decode_augment']:.0f} vs {rate['stream_augment']:.0f})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
