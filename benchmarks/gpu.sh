#!/usr/bin/env bash
# Everything #9 asks of a GPU, in one go (about 10 minutes on an H100-class GPU):
#   the CUDA tests against the CPU, then pipeline.py at 1080p (eccv16, the issue's target, and the
#   default model), then the training loop's throughput. Results land in $OUT (or ./gpu-results).
#
#   bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

python -m pytest -q -m gpu -rf 2>&1 | tail -20 | tee "$out/tests.txt"
for model in eccv16 default; do
  python benchmarks/pipeline.py --device cuda --size 1080p --model "$model" --frames 240 --json \
    > "$out/pipeline-1080p-$model.json" 2> "$out/pipeline-1080p-$model.err"
  python -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], r['serial_bound_fps'], \
{k: v['fps'] for k, v in r['results'].items()}, r['ratios'])" "$out/pipeline-1080p-$model.json" "$model"
done
python benchmarks/train_speed.py --device cuda --batch-size 64 --image-size 256 --json \
  > "$out/train-speed.json" 2> "$out/train-speed.err"
tail -c 600 "$out/train-speed.json"
