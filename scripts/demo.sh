#!/usr/bin/env bash
# The main job on the built-in demo dataset, end to end: install, train, evaluate, detect.
# The dataset is generated on first use (data/demo.data: generate=demo). Extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=${PYTHON:-python3}
run=demo-$(date +%Y%m%d-%H%M%S)

"$PY" train.py cfg/demo.cfg data/demo.data --name "$run" "$@"
best=runs/train/$run/weights/best.pt
"$PY" evaluate.py - data/demo.data "$best" --out "runs/eval/$run" --json "runs/eval/$run/map.json"
"$PY" detect.py --weights "$best" --source 'data/demo/images/test/test00000*.jpg' --name "$run" --exist-ok --save-txt
echo "run: runs/train/$run   evaluation: runs/eval/$run   detections: runs/detect/$run"
