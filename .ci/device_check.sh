#!/usr/bin/env bash
# GPU checks for a session lent a device machine: one call of the device tool. Results: benchmarks/results/h200/
# (or h100/: compare timings on the same card only).
#
# Time: every step runs under `timeout`; the caps (wheel install and imports included) add up to 380 s, so run it
# with timeout_s=400 (the rest is nvidia-smi and slack; SKIP="streaming profile_augment", names separated by spaces,
# leaves steps out of a rerun). A session has 15 minutes of device time in all and a machine takes 1-4 minutes to
# start. The 2026-11-28 H200 runs took 84-90 s of steps (kernels 9-11 s, cuda_tests 27-33 s, gpu_augment 21 s,
# profile_augment 19 s; streaming 48 s in an earlier run) plus about 80 s to start: the caps are far above that, and
# a REPRODUCE=1 call (caps 270 s) fits after this one only if both end well under their caps.
#
# Prepare once here (the device machine has torch, torchvision, timm, scikit-learn, hypothesis, pytest, not kornia,
# webdataset or Fashion-MNIST; see ../.library/device/README.md on carrying wheels):
#   printf '/.whl/\n/.fmnist/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl kornia==0.9.0 kornia_rs==0.2.0 webdataset==1.0.2 braceexpand
#   mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/*.gz .fmnist/   # 31 MB, from dataset-fashion-mnist
# Then: run(command="bash .ci/device_check.sh", carry=[".whl", ".fmnist"], timeout_s=400), and give the machine back
# (or, straight away while it is warm and device time is left, the REPRODUCE=1 call at the end).
#
# Each step writes its own file under $OUT as soon as it ends (a kill at the call's limit keeps the earlier ones),
# its exit code goes to $OUT/steps.txt, and the script ends non-zero, with a one-line summary, when any step failed
# (timeout's 124 included). $OUT brings back at most 8 files: steps.txt, kernels.txt, cuda_tests.txt,
# gpu_augment.{json,png}, profile_augment.json, streaming.json (and the logs of the three benchmarks go into
# bench_logs.txt).
set -u -o pipefail
out=${OUT:-/tmp/enlight_out}
mkdir -p "$out"
: >"$out/steps.txt"
failed=()

# step NAME CAP LOG COMMAND...: run COMMAND under `timeout CAP`, its output appended to LOG (and shown), then record
# the exit code of COMMAND (not of tee) in steps.txt.
step() {
  local name=$1 cap=$2 log=$3
  shift 3
  if [[ " ${SKIP:-} " == *" $name "* ]]; then  # SKIP="streaming ...": steps a rerun leaves out
    echo "$name skipped" >>"$out/steps.txt"
    return
  fi
  local start=$SECONDS
  echo "=== $name (cap ${cap} s) ===" | tee -a "$log"
  timeout "$cap" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "$name rc=$rc ${cap}s-cap $((SECONDS - start))s" >>"$out/steps.txt"
  [ "$rc" = 0 ] || failed+=("$name:$rc")
}

finish() {
  if [ ${#failed[@]} -eq 0 ]; then
    echo "device_check: all steps passed ($(grep -c ' rc=' "$out/steps.txt") steps ran, ${SECONDS} s)" \
      | tee -a "$out/steps.txt"
    exit 0
  fi
  echo "device_check: FAILED ${failed[*]} (${SECONDS} s)" | tee -a "$out/steps.txt"
  exit 1
}

# Caps, in seconds: 15 (wheels) + 15 (imports) + then either 240 (reproduce) or 35 + 80 + 120 + 60 + 55 = 350: run
# it with timeout_s=400 (the 2026-11-28 H200 run: kernels 11 s, cuda_tests 33 s, streaming 48 s; gpu_augment and
# profile_augment ran past caps of 45 s and 25 s then, before the slow peers were timed one call per round).
if [ -d .whl ]; then
  timeout 15 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || { echo "device_check: FAILED wheel install" | tee -a "$out/steps.txt"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L
timeout 15 python3 -c "import torch, kornia, webdataset; print(torch.__version__, torch.cuda.get_device_name())" \
  || { echo "device_check: FAILED imports" | tee -a "$out/steps.txt"; exit 1; }

if [ "${REPRODUCE:-0}" = 1 ]; then  # the second call: the paper's strategies, least urgent
  step reproduce 240 "$out/reproduce_log.txt" python3 -m benchmarks.reproduce --gpu --seeds 2 --fashion-dir .fmnist \
    --no-progress --no-plots --out "$out"
  finish
fi

# 0. Which kernels GpuAugment and mixing run here (the fused Triton ones unless Triton is missing or fails); the
#    first Triton compiles (five kernels, each with a small C launcher) happen here, so each part prints as it ends.
step kernels 35 "$out/kernels.txt" python3 - <<'PY'
import time, torch, enlight_data.augment as A, enlight_data._fused as F
t = time.perf_counter()
out = A.GpuAugment(32, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)(
    torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8, device="cuda"))
torch.cuda.synchronize()
print(f"augment ({time.perf_counter() - t:.1f} s): draw:", A._draw_backend(out.device), "resample:",
      A._resample_backend(out.device, torch.uint8), "colour map:", A._colour_backend(out.device, torch.float32, 3),
      "failed:", F.FAILED, out.shape, flush=True)
import enlight_data as ed, enlight_data.mixing as M
xm, ym, _ = ed.mix_batch(out, torch.arange(4, device="cuda"), ed.Phase(cutmix_alpha=1.0), num_classes=4,
                         generator=torch.Generator(device="cuda"))
torch.cuda.synchronize()
xm, ym, _ = ed.mix_batch(out, torch.arange(4, device="cuda"), ed.Phase(mixup_alpha=0.8, mix_prob=0.5),
                         num_classes=4, generator=torch.Generator(device="cuda"))
torch.cuda.synchronize()
fused = {name: M._fused(name, out.device) for name in ("mix", "mix_params", "blend")}
print(f"mixing ({time.perf_counter() - t:.1f} s): fused:", fused, "failed:", F.FAILED,
      xm.shape, flush=True)
PY
# 1. The CUDA tests (skipped on CPU-only CI): no per-step sync, CPU/CUDA agreement, GPU decode, resume, nccl.
step cuda_tests 80 "$out/cuda_tests.txt" python3 -m pytest -q -p no:cacheprovider -m needs_cuda -rs tests
# 2. Augmentation and mixing against Kornia, timm, torchvision (goals: GpuAugment >= 20x Kornia, mixing >= 0.7x lerp).
#    15 rounds, not 25: the H200 medians of 2026-11-27 put 25 rounds' timed calls at about 37 s (26 s of them the
#    torchvision per-image loop and Kornia's RandomCutMixV2, which feed no goal); 15 rounds take about 22 s.
step gpu_augment 120 "$out/bench_logs.txt" python3 benchmarks/gpu_augment.py --device cuda --repeats 15 \
  --out "$out/gpu_augment.json"
# 3. Where the time goes: torch.profiler per call, GpuAugment and Kornia, mix_batch and the bare lerp.
step profile_augment 60 "$out/bench_logs.txt" python3 -m benchmarks.profile_augment --device cuda \
  --out "$out/profile_augment.json"
# 4. Streaming on the GPU: decode="gpu" (nvjpeg) against decoding in 2 workers, both cropped by GpuAugment.
step streaming 55 "$out/bench_logs.txt" python3 -m benchmarks.streaming --device cuda --samples 1024 --rounds 3 \
  --out "$out/streaming.json"
finish
# The paper's strategies on a GPU (3 strategies x 2 seeds, Fashion-MNIST 32x32), only if device time is left:
#   run(command="REPRODUCE=1 bash .ci/device_check.sh", carry=[".whl", ".fmnist"], timeout_s=300)
