#!/usr/bin/env bash
# GPU check, under 10 minutes on a machine with an NVIDIA GPU: frames/s of the detection function at batch 1-32
# on the CUDA provider, fp32 and fp16, with and without IOBinding (bench/bench_gpu.py, through vigil's own session
# code), fp16 boxes against fp32 on real frames. CI never runs it.
#
#   bench/gpu_check.sh            # CUDA 12 or 13 wheels, chosen from the driver's CUDA version (nvidia-smi)
#   bench/gpu_check.sh cu12 --tensorrt
#
# First run: a venv in .state/gpu-venv-<cu12|cu13> with vigil[gpu-cu12|gpu-cu13] from PyPI (CUDA and cuDNN come
# as nvidia-* wheels; no system CUDA needed); set VIGIL_GPU_VENV to use a venv prepared beforehand instead (a
# machine without network access). The shared models and footage are read from ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour="${1:-}"
if [[ "$flavour" == cu12 || "$flavour" == cu13 ]]; then
    shift
else
    major="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)"
    flavour="$([[ "${major:-13}" -ge 13 ]] && echo cu13 || echo cu12)"
fi
venv="${VIGIL_GPU_VENV:-.state/gpu-venv-$flavour}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e ".[gpu-$flavour]"
    # The CPU onnxruntime (a base dependency) and onnxruntime-gpu install the same `onnxruntime` module and the
    # last one wins: keep the GPU build alone.
    version="$("$venv/bin/pip" show onnxruntime-gpu | sed -n 's/^Version: //p')"
    "$venv/bin/pip" uninstall -y -q onnxruntime onnxruntime-gpu
    "$venv/bin/pip" install -q --no-deps "onnxruntime-gpu==$version"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
PYTHONUNBUFFERED=1 timeout 540 "$venv/bin/python" bench/bench_gpu.py "$@"
