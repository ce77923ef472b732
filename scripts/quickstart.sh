#!/usr/bin/env bash
# The whole product on the project's own corpus: fetch the base model, build, fine-tune on
# data/train.jsonl (dev: data/dev.jsonl), evaluate on data/test.jsonl, tag data/samples/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
run=runs/quickstart
epochs=${EPOCHS:-4}

scripts/fetch-model.sh
cargo build --release --locked
bin=target/release/newstag

"$bin" validate data/train.jsonl data/dev.jsonl data/test.jsonl
if [ -f "$run/checkpoints/latest.json" ] && [ ! -f "$run/DONE" ]; then
  "$bin" train --resume "$run"
elif [ ! -f "$run/DONE" ]; then
  "$bin" train --base models/all-MiniLM-L6-v2 --train data/train.jsonl --dev data/dev.jsonl \
    --epochs "$epochs" --batch-size 4 --out "$run"
fi
touch "$run/DONE"
mkdir -p out
"$bin" eval --model "$run" --data data/test.jsonl --json out/test-report.json | tee out/test-report.txt
"$bin" tag --model "$run" data/samples --out out/tags.jsonl --html out/tags.html

echo
echo "model:        $run/"
echo "dev metrics:  $run/metrics.jsonl"
echo "test report:  out/test-report.txt, out/test-report.json"
echo "tags:         out/tags.jsonl"
echo "page:         out/tags.html (open it in a browser)"
echo "took $(( $(date +%s) - start ))s"
