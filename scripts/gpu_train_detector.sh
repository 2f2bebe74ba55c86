#!/usr/bin/env bash
# Run ON the GPU machine through the device tool, carrying ".whl" and ".rosmsgs" (made here first by
# scripts/gpu_carry.sh):
#   run(command="bash scripts/gpu_train_detector.sh", carry=[".whl", ".rosmsgs"], timeout_s=600)
# Renders the detector data set there (2 min on this project's CPU), fine-tunes the committed
# YOLOv8n at the camera's own 640 px on the GPU for $MINUTES, scores it on the held-out split at 640
# (`racestack train detector`'s evaluation) and at the node's default 416, and leaves weights.pt,
# metrics.json and the logs in $OUT. Variables: MINUTES (5), MODEL, EPOCHS, BATCH, WORKERS, DEVICE
# (0), PYTHON (python3), DATASET (the export's arguments; the model card's by default).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${OUT:-/tmp/gpu_detector}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="$PWD:$PWD/.rosmsgs:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 YOLO_CONFIG_DIR=/tmp/ultralytics_config
data=/tmp/detector_v2
read -r -a dataset <<< "${DATASET:---seeds 3 --frames 80 --val-frames 30 --test-frames 100 --every 12}"
start=$(date +%s)
"$python" -m racestack.cli dataset detector --out "$data" "${dataset[@]}" > "$out/dataset.log" 2>&1 \
  || { tail -n 30 "$out/dataset.log"; exit 1; }
echo "data set rendered in $(( $(date +%s) - start )) s: $(find "$data" -name '*.jpg' | wc -l) images"
"$python" -m racestack.cli train detector --data "$data/data.yaml" \
  --model "${MODEL:-models/detector_yolov8n/weights.pt}" --imgsz 640 --eval-imgsz 640 \
  --epochs "${EPOCHS:-300}" --minutes "${MINUTES:-5}" --batch "${BATCH:-32}" --workers "${WORKERS:-8}" \
  --device "${DEVICE:-0}" --optimizer AdamW --lr0 0.001 --seed 0 --runs /tmp/gpu_runs --out "$out" \
  > "$out/train.log" 2>&1 || { tail -n 40 "$out/train.log"; exit 1; }
tail -n 12 "$out/train.log"
"$python" -m perception_nodes.flying_objects.evaluation --weights "$out/weights.pt" --data "$data/data.yaml" \
  --split test --imgsz 416 2>&1 | tee "$out/eval416.log" | tail -n 6
echo "done in $(( $(date +%s) - start )) s; files in $out: $(ls "$out" | tr '\n' ' ')"
