#!/usr/bin/env bash
# Renders newstag's three HTML pages in headless Chromium and saves screenshots: the `tag --html`
# page, the `eval --html` page and a run directory's index.html (with curves.svg inline). Fails if
# a page cannot be rendered or writes to the browser console (scripts/screenshot.sh). Look at the
# screenshots: they are the check that the pages are readable. Not part of `cargo test`.
#
# Usage: scripts/check-pages.sh [RUN_DIR]
#   RUN_DIR  a newstag run directory (from `newstag train`) to use; without it, a tiny random base
#            model is trained for 3 epochs on data/train.jsonl (two or three minutes on two cores).
# Environment: OUT (default out/pages) receives the pages and PNGs; CHROMIUM as for screenshot.sh.
# Needs cargo and Debian's chromium.
set -euo pipefail

cd "$(dirname "$0")/.."
out=${OUT:-out/pages}
mkdir -p "$out"

cargo build --quiet --bin newstag --example interop
bin=target/debug/newstag

if [[ $# -ge 1 ]]; then
  run=$1
  [[ -f $run/config.json ]] || { echo "$0: $run is not a newstag run directory" >&2; exit 2; }
else
  run=$out/run
  rm -rf -- "$run" "$out/base"
  target/debug/examples/interop tiny-base "$out/base" data/train.jsonl
  "$bin" train --base "$out/base" --train data/train.jsonl --dev data/dev.jsonl --out "$run" \
    --epochs 3 --batch-size 8 --lr 3e-3 --window 128 --overlap 32 --patience 5 --checkpoint-every 0
fi
# Runs from before newstag drew curves get their index.html now.
[[ -f $run/index.html ]] || { echo "$0: $run has no index.html (trained before curves existed?)" >&2; exit 1; }

"$bin" tag --model "$run" data/samples --out "$out/tags.jsonl" --html "$out/tags.html"
"$bin" eval --model "$run" --data data/test.jsonl --html "$out/eval.html" --json "$out/eval.json"

scripts/screenshot.sh "$out/tags.html" "$out/tags.png"
scripts/screenshot.sh "$out/eval.html" "$out/eval.png"
scripts/screenshot.sh "$run/index.html" "$out/index.png"
echo "pages and screenshots in $out (run: $run)"
