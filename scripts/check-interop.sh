#!/usr/bin/env bash
# Checks that newstag and Hugging Face transformers read each other's models (not run in CI).
#
#  (a) newstag -> transformers: trains a tiny newstag model (random tiny base, a few epochs on a
#      synthetic corpus, windows of 32 sub-tokens so long articles get several), loads the run
#      directory with AutoModelForTokenClassification / AutoTokenizer, and checks that per-word
#      logits (1e-4), argmax tags, decoded entities and their scores (1e-4) equal newstag's; loads
#      the topic head from model.safetensors (config.json newstag.topic_head) and checks the topic
#      probabilities from mean pooling (1e-4).
#  (b) transformers -> newstag: fine-tunes a tiny BertForTokenClassification for a few steps in
#      transformers, saves it with save_pretrained (model, config and a fast tokenizer's
#      tokenizer.json), tags and evaluates it with newstag, checks the entities and scores equal
#      transformers' own, and that `newstag eval --predictions` on transformers' predictions gives
#      the same report as `newstag eval --model` on the saved model.
#
# Usage: scripts/check-interop.sh
# Environment: VENV  a virtualenv with torch, transformers, safetensors and numpy to use; without
#                    it, .venv-interop/ is created (pip install torch transformers safetensors numpy).
#              WORK  output directory (default out/interop; a previous check's is emptied first,
#                    anything else that is not empty is refused).
#              BASE  a real base model directory for (a) instead of the tiny random one (for example
#                    models/all-MiniLM-L6-v2 from scripts/fetch-model.sh); trains one epoch.
# Results: $WORK/summary.json; the numbers are recorded in docs/interop.md.
set -euo pipefail

cd "$(dirname "$0")/.."
work=${WORK:-out/interop}
# WORK is emptied first, so only a directory this check made (it leaves a marker) or an empty
# one is accepted: never a user's folder.
if [[ -d $work && -n $(ls -A "$work") && ! -f $work/.newstag-interop ]]; then
  echo "error: WORK=$work is not empty and was not made by check-interop.sh; give a new directory" >&2
  exit 1
fi
rm -rf -- "$work"
mkdir -p "$work"
touch "$work/.newstag-interop"

if [[ -n ${VENV:-} ]]; then
  py=$VENV/bin/python
else
  py=.venv-interop/bin/python
  if ! "$py" -c 'import torch, transformers, safetensors, numpy' 2>/dev/null; then
    python3 -m venv .venv-interop
    "$py" -m pip install --quiet torch transformers safetensors numpy
  fi
fi
"$py" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'
check() { "$py" scripts/fixtures/interop_check.py "$@"; }
export TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1

cargo build --quiet --bin newstag --example interop
bin=target/debug/newstag
tools=target/debug/examples/interop
data=$work/data.jsonl

echo "== (a) newstag -> transformers"
check corpus "$data" 24
if [[ -n ${BASE:-} ]]; then
  base=$BASE
  train_opts=(--epochs 1 --max-steps 30 --lr 5e-4)
else
  base=$work/base
  "$tools" tiny-base "$base" "$data"
  train_opts=(--epochs 3 --lr 3e-3)
fi
"$bin" train --base "$base" --train "$data" --dev "$data" --out "$work/run" "${train_opts[@]}" \
  --batch-size 4 --window 32 --overlap 8 --checkpoint-every 0 2>"$work/train.log"
# A copy of the model whose topic thresholds are 0, so that `tag` lists every topic's probability,
# and without its calibration (fitted on dev by `train`), so that scores are the heads' own.
mkdir -p "$work/run-all-topics"
cp "$work/run/model.safetensors" "$work/run/tokenizer.json" "$work/run-all-topics/"
"$py" - "$work/run/config.json" "$work/run-all-topics/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["newstag"]["thresholds"] = [0.0] * len(c["newstag"]["topics"])
# Scores as the heads give them: the reference applies no calibration.
c["newstag"].pop("calibration", None)
json.dump(c, open(sys.argv[2], "w"), indent=2)
EOF
"$bin" tag --model "$work/run-all-topics" --precision f32 "$data" --out "$work/a-tags.jsonl" 2>/dev/null
"$tools" logits "$work/run" "$data" >"$work/a-logits.jsonl"
check check-newstag "$work/run" "$data" "$work/a-logits.jsonl" "$work/a-tags.jsonl" "$work/a.json"

echo "== (b) transformers -> newstag"
check make-hf "$work/hf" "$data"
"$bin" tag --model "$work/hf" --precision f32 "$data" --out "$work/b-tags.jsonl" 2>/dev/null
check check-hf "$work/hf" "$data" "$work/b-tags.jsonl" "$work/b-predictions.jsonl" "$work/b.json"
"$bin" eval --model "$work/hf" --precision f32 --data "$data" --json "$work/b-eval-model.json"
"$bin" eval --predictions "$work/b-predictions.jsonl" --data "$data" \
  --json "$work/b-eval-predictions.json" --html "$work/b-eval-predictions.html" >/dev/null
"$py" - "$work" <<'EOF'
import json, sys
w = sys.argv[1]
load = lambda name: json.load(open(f"{w}/{name}"))
model, preds, b = load("b-eval-model.json"), load("b-eval-predictions.json"), load("b.json")
def close(x, y):
    """Equal, floats within 1e-6 (the predictions file carries transformers' float64 scores)."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(close(a, b) for a, b in zip(x, y))
    if isinstance(x, float) or isinstance(y, float):
        return abs(x - y) <= 1e-6
    return x == y
same = close(model, preds)
f1 = model["entities"]["micro"]["f1"]
agree = abs(f1 - b["python_micro"]["f1"]) < 1e-12
summary = {"a": load("a.json"), "b": b, "b_newstag_eval_micro_f1": f1,
           "b_eval_model_equals_eval_predictions": same, "b_python_f1_equals_newstag": agree}
json.dump(summary, open(f"{w}/summary.json", "w"), indent=2)
print(f"newstag eval --model (transformers model): micro-F1 {f1:.4f}; python: "
      f"{b['python_micro']['f1']:.4f}; eval --predictions gives the same report: {same}")
ok = summary["a"]["ok"] and b["ok"] and same and agree
print("interop check:", "OK" if ok else "FAILED", f"(details in {w}/summary.json)")
sys.exit(0 if ok else 1)
EOF
