#!/usr/bin/env bash
# The accelerator benchmarks in one go (~8 minutes on one H100), on in-memory synthetic data:
#   1. the paper-config ReText train step in bfloat16: images/s and MFU (analytic FLOPs);
#   2. the same step in PyTorch (bf16 autocast, torch.compile), side by side;
#   3. evaluation at full MSMT17 size (11,659 x 82,161) on the JAX device path.
#
#   bash benchmarks/gpu_suite.sh                 # on the GPU machine (PEAK_TFLOPS=989: H100 bf16)
#   bash benchmarks/gpu_suite.sh --cpu           # the same commands, small, on this CPU (~2 min)
#
# $PYTHON (default: python) needs JAX, flax, optax, torch, transformers, ml_collections and
# absl (no TensorFlow, no clu).
# Prints each table and writes train_step_paper.json and evaluation_device.json into
# $RESULTS_DIR (default: benchmarks/results on the GPU, a temporary folder with --cpu).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--cpu" ]]; then
  preset=tiny dtype=float32 torch_modes=eager torch_device=cpu peak=0 scale=0.02
  out="${RESULTS_DIR:-$(mktemp -d)}"
  export JAX_PLATFORMS=cpu
else
  preset=paper dtype=bfloat16 torch_modes=compile torch_device=cuda
  peak="${PEAK_TFLOPS:-989}" scale=1.0 out="${RESULTS_DIR:-benchmarks/results}"
fi
mkdir -p "$out"

echo "== 1-2. ReText train step ($preset, $dtype): ours vs PyTorch ($torch_modes)"
"${PYTHON:-python}" benchmarks/train_step.py --config retext --preset "$preset" --dtype "$dtype" \
  --peak-tflops "$peak" --torch "$torch_modes" --torch-device "$torch_device" \
  --out "$out/train_step_$preset.json"

echo "== 3. Evaluation at $scale x MSMT17 size on the JAX device path"
"${PYTHON:-python}" benchmarks/evaluation.py --device --scale "$scale" \
  --out "$out/evaluation_device.json"
