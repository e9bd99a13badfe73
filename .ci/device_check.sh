#!/usr/bin/env bash
# GPU checks for a session lent a device machine: one call of the device tool, about 8 minutes.
#
# Prepare once here (the device machine has torch, torchvision, timm, scikit-learn, hypothesis, pytest, not kornia,
# webdataset or Fashion-MNIST; see ../.library/device/README.md on carrying wheels):
#   printf '/.whl/\n/.fmnist/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl kornia==0.9.0 kornia_rs==0.2.0 webdataset==1.0.2 braceexpand
#   mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/*.gz .fmnist/   # 31 MB (apt-get install dataset-fashion-mnist)
# Then: run(command="bash .ci/device_check.sh", carry=[".whl", ".fmnist"], timeout_s=590), and give the machine back.
set -u
out=${OUT:-/tmp/enlight_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
nvidia-smi -L
python3 -c "import torch, kornia, webdataset; print(torch.__version__, torch.cuda.get_device_name())"
# 1. The CUDA tests (skipped on CPU-only CI): no per-step sync, CPU/CUDA agreement, GPU decode, resume, nccl.
timeout 200 python3 -m pytest -q -p no:cacheprovider -m needs_cuda -rs tests 2>&1 | tail -25 | tee "$out/cuda_tests.txt"
# 2. GPU augmentation and mixing against Kornia, timm, torchvision (goal: GpuAugment >= 20x Kornia).
timeout 150 python3 benchmarks/gpu_augment.py --device cuda --out "$out/gpu_augment.json" 2>&1 | tail -30
# 3. The paper's strategies on a GPU, sized for the budget (3 strategies x 3 seeds, Fashion-MNIST 32x32).
timeout 200 python3 -m benchmarks.reproduce --gpu --fashion-dir .fmnist --out "$out" 2>&1 | tail -25
