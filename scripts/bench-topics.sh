#!/usr/bin/env bash
# Topic poolings compared on one model's frozen passage states (issue 17), then the design best on
# dev installed into a copy of the model and scored through `newstag eval` (articles JSONL: the raw
# text path) on dev, the held-out set and the project's test split. Writes both tables into
# docs/benchmarks.md between the bench-topics markers.
#   scripts/bench-topics.sh [MODEL] [OUT]     (default runs/conll, runs/conll-passages)
# MODEL: a run trained with topics (CoNLL-2003 by default). Heads are fitted on CoNLL train +
# data/train.jsonl, penalty, design and thresholds chosen on CoNLL dev + data/dev.jsonl;
# data/heldout.jsonl (another writer, never tuned on) and data/test.jsonl are only scored.
# Needs ../shared/data/conll2003 beside the checkout. About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
s=../shared/data/conll2003
model=${1:-runs/conll}
out=${2:-runs/conll-passages}
[ -d "$s" ] || { echo "error: $s not found (the shared CoNLL-2003 folder)" >&2; exit 1; }
cargo build --release --locked --bin newstag --example topic_designs
bin=target/release/newstag
tmp=$(mktemp -d)
# A finished comparison (OUT with its table) is reused: the evaluations below are rerun.
if [ ! -f "$out/topic-designs.md" ]; then
  [ -e "$out" ] && { echo "error: $out exists without topic-designs.md; remove it or give another OUT" >&2; exit 1; }
  target/release/examples/topic_designs "$model" \
    --train "$s/train.conll@$s/topics/train.jsonl" --train data/train.jsonl \
    --dev "$s/dev.conll@$s/topics/dev.jsonl" --dev data/dev.jsonl \
    --eval heldout=data/heldout.jsonl --eval test=data/test.jsonl --save "$out" > "$tmp/designs.md"
  mv "$tmp/designs.md" "$out/topic-designs.md"
fi
cp "$out/topic-designs.md" "$tmp/designs.md"
for set in dev heldout test; do
  "$bin" eval --model "$model" --precision f32 --data "data/$set.jsonl" --json "$tmp/before-$set.json" > /dev/null
  "$bin" eval --model "$out" --precision f32 --data "data/$set.jsonl" --json "$tmp/after-$set.json" > /dev/null
done
"$bin" eval --model "$model" --precision f32 --data "$s/test.conll" --json "$tmp/before-conll.json" > /dev/null
"$bin" eval --model "$out" --precision f32 --data "$s/test.conll" --json "$tmp/after-conll.json" > /dev/null
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
python3 - "$tmp" "$model" "$out" "$cpu" <<'PY'
import json, sys, datetime, os
tmp, model, out, cpu = sys.argv[1:]
def report(name):
    return json.load(open(os.path.join(tmp, name)))
def topics(r):
    t = r["topics"]
    recalls = [c["recall"] for c in t["per_label"].values() if c["support"] > 0]
    return f"{t['micro']['f1']:.3f} | {min(recalls):.2f}"
rows = []
for m, b in ((model, "before"), (out, "after")):
    cells = " | ".join(topics(report(f"{b}-{s}.json")) for s in ("dev", "heldout", "test"))
    conll = report(f"{b}-conll.json")
    rows.append(f"| `{m}` | {cells} | {conll['entities']['micro']['f1']:.4f} |")
designs = open(os.path.join(tmp, "designs.md")).read().strip()
section = (f"CPU: {cpu}; {datetime.date.today()}; `scripts/bench-topics.sh {model} {out}`.\n\n"
           "Designs, on the frozen passage states of the model (heads fitted on CoNLL train + "
           "data/train.jsonl; penalty and thresholds chosen on dev = CoNLL dev + data/dev.jsonl; "
           "\"min recall\" is the lowest per-topic recall; \"long\" = articles over 800 words, "
           "count in brackets):\n\n" + designs + "\n\n"
           "Through `newstag eval` on articles JSONL (the raw-text path), before and after "
           "installing the design best on dev (topic micro-F1 | min recall per set), with CoNLL-2003 "
           "test entity F1 (`eval` on test.conll):\n\n"
           "| model | dev F1 | dev min recall | held-out F1 | held-out min recall | test F1 | test min recall | CoNLL test entity F1 |\n"
           "|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
sys.path.insert(0, "scripts")
from doc_section import write_section
write_section("docs/benchmarks.md", "bench-topics", section,
              "## Topics from passages (issue 17)\n\nWritten by `scripts/bench-topics.sh`.")
print(section)
PY
rm -rf "$tmp"
