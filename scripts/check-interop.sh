#!/usr/bin/env bash
# Checks that newstag and Hugging Face transformers read each other's models, for every encoder
# family (not run in CI).
#
# For each family, on its tiny random checkpoint (tests/fixtures/families/FAMILY/base, made by
# scripts/fixtures/make_family_fixtures.py with a real tokenizer of the family's kind):
#  (a) newstag -> transformers: trains a tiny newstag model on the base (a few epochs on a
#      synthetic corpus, windows of 32 sub-tokens so long articles get several), loads the run
#      directory with AutoModelForTokenClassification / AutoTokenizer, and checks that per-word
#      logits (1e-4), argmax tags, decoded entities and their scores (1e-4) equal newstag's; loads
#      the topic head from model.safetensors (config.json newstag.topic_head) and checks the topic
#      probabilities pooled as the model pools them (1e-4).
#  (b) transformers -> newstag: fine-tunes the family's ...ForTokenClassification on the same base
#      for a few steps in transformers, saves it with save_pretrained (model, config, tokenizer),
#      tags and evaluates it with newstag, checks the entities and scores equal transformers' own,
#      and that `newstag eval --predictions` on transformers' predictions gives the same report as
#      `newstag eval --model` on the saved model.
#
# Usage: scripts/check-interop.sh
# Environment: VENV      a virtualenv with torch, transformers, safetensors and numpy to use;
#                        without it, .venv-interop/ is created (pip install torch transformers
#                        safetensors numpy).
#              WORK      output directory (default out/interop; a previous check's is emptied
#                        first, anything else that is not empty is refused).
#              FAMILIES  the families to check, space-separated (default: every one under
#                        tests/fixtures/families).
#              BASE      a real base model directory (for example models/all-MiniLM-L6-v2 from
#                        scripts/fetch-model.sh): checks that base alone, training one epoch.
# Results: $WORK/summary.json (per family); with every family checked and passing, the table in
# docs/interop.md ("Every family").
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
check corpus "$data" 24

if [[ -n ${BASE:-} ]]; then
  families=(base)
else
  read -r -a families <<<"${FAMILIES:-$(ls tests/fixtures/families | tr '\n' ' ')}"
fi

# One family: $1 its name, $2 its base directory, $3 where its outputs go.
check_family() {
  local family=$1 base=$2 out=$3
  local train_opts=(--epochs 3 --lr 3e-3)
  [[ -n ${BASE:-} ]] && train_opts=(--epochs 1 --max-steps 30 --lr 5e-4)
  mkdir -p "$out/run-all-topics"
  echo "== $family: (a) newstag -> transformers"
  "$bin" train --base "$base" --train "$data" --dev "$data" --out "$out/run" "${train_opts[@]}" \
    --batch-size 4 --window 32 --overlap 8 --checkpoint-every 0 2>"$out/train.log"
  cp "$out/run/model.safetensors" "$out/run/tokenizer.json" "$out/run-all-topics/"
  check all-topics "$out/run" "$out/run-all-topics"
  "$bin" tag --model "$out/run-all-topics" --precision f32 "$data" --out "$out/a-tags.jsonl" 2>/dev/null
  "$tools" logits "$out/run" "$data" >"$out/a-logits.jsonl"
  check check-newstag "$out/run" "$data" "$out/a-logits.jsonl" "$out/a-tags.jsonl" "$out/a.json" >/dev/null

  echo "== $family: (b) transformers -> newstag"
  check make-hf "$out/hf" "$data" "$base"
  "$bin" tag --model "$out/hf" --precision f32 "$data" --out "$out/b-tags.jsonl" 2>/dev/null
  "$tools" logits "$out/hf" "$data" >"$out/b-logits.jsonl"
  check check-hf "$out/hf" "$data" "$out/b-logits.jsonl" "$out/b-tags.jsonl" \
    "$out/b-predictions.jsonl" "$out/b.json" >/dev/null
  "$bin" eval --model "$out/hf" --precision f32 --data "$data" --json "$out/b-eval-model.json" >/dev/null
  "$bin" eval --predictions "$out/b-predictions.jsonl" --data "$data" \
    --json "$out/b-eval-predictions.json" --html "$out/b-eval-predictions.html" >/dev/null
}

for family in "${families[@]}"; do
  base=${BASE:-tests/fixtures/families/$family/base}
  # A family whose step fails stops there and is reported failed by the summary; the others
  # still run. (In a subshell run as its own command, so that set -e holds inside it.)
  set +e
  (set -e; check_family "$family" "$base" "$work/$family")
  status=$?
  set -e
  [[ $status -eq 0 ]] || echo "$family: a step failed (exit $status; see $work/$family)" >&2
done
# Every family checked: the table in docs/interop.md is this run's.
doc=()
[[ -z ${BASE:-} && -z ${FAMILIES:-} ]] && doc=(--doc docs/interop.md)
check summary "$work" "${doc[@]}" "${families[@]}"
