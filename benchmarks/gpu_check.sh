#!/usr/bin/env bash
# The GPU path in one go, at most 8 minutes, on a machine with an NVIDIA GPU and intertask's packages
# (a CUDA build of torch, then `pip install -e '.[dev]'`): the `cuda` tests (a study trained in the auto
# precision on the GPU, evaluated, embedded for retrieval, saved, registered, loaded back; a training run
# resumed from a checkpoint on the device), then the throughput of intertask vs the tuned HF Trainer
# (benchmarks/gpu_throughput.py). The tests read real data: ../shared/data, or $INTERTASK_DATA.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v .venv/bin/python || command -v python3)}
export HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
started=$(date +%s)
timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
timeout 180 "$PYTHON" benchmarks/gpu_throughput.py
echo "gpu_check: $(( $(date +%s) - started )) s"
