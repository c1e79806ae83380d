#!/usr/bin/env bash
# The CUDA checks in one run, for a machine with an NVIDIA GPU, a CUDA build of PyTorch and no network:
#
#   1. tests/test_gpu.py (the network, checkpoints, training and the service on the GPU)
#   2. the /generate benchmark with CVAE_DEVICE=cuda (project vs the plain server, with hey)
#   3. a training run on the GPU: the full-MNIST preset, 20 epochs, its metrics
#
# Prepare on a machine with network: `make device-bundle` (writes .device/, see scripts/device_bundle.sh),
# then bring the checkout and .device/ to the GPU machine and run, in the checkout:
#
#   OUT=/some/dir bash scripts/device_check.sh     # logs and figures in $OUT (default reports/device)
#
# Each step has a time limit (under 9 minutes in all) and its own log; summary.txt lists each step's exit
# status. The script exits non-zero when a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-reports/device}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PATH="$PWD/.device/bin:$PATH"
failed=0

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log to $out/NAME.log
    local name=$1 seconds=$2
    shift 2
    echo "== $name (at most ${seconds} s): $*"
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name.log"
    local code=${PIPESTATUS[0]}
    echo "$name: exit $code" | tee -a "$out/summary.txt"
    [ "$code" -eq 0 ] || failed=1
}

: >"$out/summary.txt"
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    "$python" -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$out/machine.txt"

step install 90 "$python" -m pip install --no-index --find-links .device/wheels -r .device/requirements.txt
step test_gpu 150 "$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py
registry=$(mktemp -d)
step seed 30 "$python" -m model.shipped --registry "$registry"
step bench_cuda 180 "$python" -m benchmarks.bench_generate --device cuda --registry "$registry" \
    --duration 10 --no-write
step train_cuda 150 "$python" -m training --device cuda --data .device/mnist --preset mnist --epochs 20 \
    --registry "$(mktemp -d)" --no-progress
exit "$failed"
