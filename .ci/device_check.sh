#!/usr/bin/env bash
# GPU checks for a session lent a device machine: one call of the device tool, about 2.5 minutes on an H200 (at most
# 7; the first H200 run, 2026-11-27, took 152 s plus a 30 s start). Results: benchmarks/results/h200/.
#
# Prepare once here (the device machine has torch, torchvision, timm, scikit-learn, hypothesis, pytest, not kornia,
# webdataset or Fashion-MNIST; see ../.library/device/README.md on carrying wheels):
#   printf '/.whl/\n/.fmnist/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl kornia==0.9.0 kornia_rs==0.2.0 webdataset==1.0.2 braceexpand
#   mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/*.gz .fmnist/   # 31 MB, from dataset-fashion-mnist
# Then: run(command="bash .ci/device_check.sh", carry=[".whl", ".fmnist"], timeout_s=300), and give the machine back
# (or, straight away while it is warm, the REPRODUCE=1 call below: 173 s on an H200).
set -u
out=${OUT:-/tmp/enlight_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
nvidia-smi -L
python3 -c "import torch, kornia, webdataset; print(torch.__version__, torch.cuda.get_device_name())"
export PYTHONUNBUFFERED=1
if [ "${REPRODUCE:-0}" = 1 ]; then  # the second call: the paper's strategies, least urgent
  timeout 280 python3 -m benchmarks.reproduce --gpu --seeds 2 --fashion-dir .fmnist --no-progress --no-plots \
    --out "$out" 2>&1 | tail -25
  exit
fi
# $OUT brings back at most 8 files: the CUDA test log, gpu_augment.{json,png}, profile_augment.json, streaming.json.
# Each step is capped so that the whole call ends inside 7 minutes and a second call (REPRODUCE=1, above) fits the
# session's device time.
# 0. Which kernels GpuAugment and mixing run here (the fused Triton ones unless Triton is missing or fails).
python3 - <<'PY'
import torch, enlight_data.augment as A, enlight_data._fused as F
out = A.GpuAugment(32, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)(
    torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8, device="cuda"))
import enlight_data as ed, enlight_data.mixing as M
xm, ym, _ = ed.mix_batch(out, torch.arange(4, device="cuda"), ed.Phase(cutmix_alpha=1.0), num_classes=4,
                         generator=torch.Generator(device="cuda"))
print("draw:", A._draw_backend(out.device), "resample:", A._resample_backend(out.device),
      "colour map:", A._colour_backend(out.device, torch.float32, 3), "mixing fused:", M._fused("blend", out.device),
      "failed:", F.FAILED, out.shape, xm.shape)
PY
# 1. The CUDA tests (skipped on CPU-only CI): no per-step sync, CPU/CUDA agreement, GPU decode, resume, nccl.
timeout 150 python3 -m pytest -q -p no:cacheprovider -m needs_cuda -rs tests 2>&1 | tail -40 | tee "$out/cuda_tests.txt"
# 2. Augmentation and mixing against Kornia, timm, torchvision (goals: GpuAugment >= 20x Kornia, mixing >= 0.7x lerp).
timeout 100 python3 benchmarks/gpu_augment.py --device cuda --out "$out/gpu_augment.json" 2>&1 | tail -50
# 3. Where the time goes: torch.profiler per call, GpuAugment and Kornia, mix_batch and the bare lerp.
timeout 45 python3 -m benchmarks.profile_augment --device cuda --out "$out/profile_augment.json" 2>&1 \
  | grep -v -E "^(USDT|STAGE)" | tail -80
# 4. Streaming on the GPU: decode="gpu" (nvjpeg) against decoding in 2 workers, both cropped by GpuAugment.
timeout 100 python3 -m benchmarks.streaming --device cuda --samples 1024 --rounds 3 --out "$out/streaming.json" 2>&1 \
  | tail -12
# The paper's strategies on a GPU (3 strategies x 2 seeds, Fashion-MNIST 32x32) run in a second call if time is left:
#   run(command="REPRODUCE=1 bash .ci/device_check.sh", carry=[".whl", ".fmnist"], timeout_s=300)
