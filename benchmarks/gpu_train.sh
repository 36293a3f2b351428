#!/usr/bin/env bash
# #20 on a lent GPU: the default model's next candidate, grown from the shipped fastcolor, in one run.
#   here, once: python benchmarks/export_photos.py cache/photos256v2 ../shared/data/photos  (22 MiB, ignored)
#               and PyAV's wheel into .whl (the GPU image has no `av`; device tool README: "carried as wheels")
#   there:      python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#               PYTHONPATH=/tmp/site MINUTES=6 bash benchmarks/gpu_train.sh     (carry ["gpu-data", ".whl"])
#   here, after: bttf eval cache/photos256v2 --weights <files_at>/run/last.safetensors --by-folder
#               python benchmarks/films.py <files_at>/run/last.safetensors --colorized <v3's films> --sheets S
# The recipe is the model card's best CPU levers at GPU length: fastcolor2 (`--init pretrained` grows it from
# the shipped weights), crops at 176 px (objects at the size films show them), label smoothing 0.1, lambda 0.9,
# EMA. The run stops after MINUTES (its checkpoints, every VAL_EVERY steps, survive that); its weights,
# metrics, loss plot, samples and log land in $OUT (or ./gpu-train); its cache and state.pt stay behind.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-train}"
data="${DATA:-gpu-data/train224}"
run="${RUN:-/tmp/bttf-gpu-run}"
mkdir -p "$out"
if [ ! -d "$data" ]; then
  echo "no training photos in $data: run benchmarks/export_photos.py here first and carry gpu-data" >&2
  exit 2
fi
timeout "$(( ${MINUTES:-6} * 60 ))" python3 -m bttf train "$data" --model "${MODEL:-fastcolor2}" \
  --out "$run" --init pretrained --image-size 176 --cache-size 224 --batch-size "${BATCH:-64}" \
  --steps "${STEPS:-20000}" --lr "${LR:-1e-3}" --warmup-steps 200 --weight-decay 0.05 --loss rebalanced \
  --rebalance-lambda 0.9 --label-smoothing 0.1 --ema 0.999 --augment film --encoder-lr-mult 1 \
  --val-every "${VAL_EVERY:-1000}" --val-images 64 --val-fraction 0.05 --workers 4 --overwrite \
  2>&1 | tee "$out/train.log" | tail -40
mkdir -p "$out/run"
cp -r "$run"/*.safetensors "$run"/metrics.csv "$run"/loss.png "$run"/samples "$out/run/" 2>/dev/null
ls -la "$out/run"
