#!/usr/bin/env bash
# Fine-tunes the default base model on CoNLL-2003 (with document topics) and scores it: the
# benchmark behind docs/benchmarks.md. Needs ../shared/data/conll2003 beside the checkout.
#   scripts/bench-conll.sh [RUN_DIR] [extra train options...]
# CONTEXT=sentence trains on one article per sentence (no document context, no topics), for the
# comparison with document-level windows. EXTRA_TRAIN=FILE adds a training file (e.g. data/train.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/conll2003
run=${1:-runs/conll}
shift || true
[ -d "$data" ] || { echo "error: $data not found (the shared CoNLL-2003 folder)" >&2; exit 1; }
scripts/fetch-model.sh
cargo build --release --locked
bin=target/release/newstag
if [ "${CONTEXT:-document}" = sentence ]; then
  # Without -DOCSTART- lines every sentence is its own article.
  tmp=$(mktemp -d)
  for s in train dev test; do grep -v -- '-DOCSTART-' "$data/$s.conll" > "$tmp/$s.conll"; done
  train=(--train "$tmp/train.conll")
  dev=(--dev "$tmp/dev.conll")
  eval_dev=(--data "$tmp/dev.conll")
  test_file=$tmp/test.conll
else
  train=(--train "$data/train.conll" --train-topics "$data/topics/train.jsonl")
  dev=(--dev "$data/dev.conll" --dev-topics "$data/topics/dev.jsonl")
  eval_dev=(--data "$data/dev.conll" --topics "$data/topics/dev.jsonl")
  test_file=$data/test.conll
fi
[ -n "${EXTRA_TRAIN:-}" ] && train+=(--train "$EXTRA_TRAIN")
# The log goes into the run directory afterwards: train refuses a non-empty directory that is not
# yet a newstag run.
log=$(mktemp)
/usr/bin/time -v "$bin" train --base models/all-MiniLM-L6-v2 "${train[@]}" "${dev[@]}" --epochs 3 --out "$run" "$@" \
  2>&1 | tee "$log" >&2
mv "$log" "$run/train.log"
"$bin" eval --model "$run" --data "$test_file" --json "$run/test-report.json" | tee "$run/test-report.txt"
"$bin" eval --model "$run" "${eval_dev[@]}" --json "$run/dev-report.json" | tee "$run/dev-report.txt"
