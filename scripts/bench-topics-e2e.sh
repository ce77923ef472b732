#!/usr/bin/env bash
# Topics end to end (issue 17): trained runs scored through `newstag eval` on articles JSONL (the
# raw-text path users tag on) on dev, the held-out set (another writer, never tuned on) and the
# project's test split, per topic and on long articles (over 800 words) alone, with entity F1 on
# the project's test split and, when ../shared is there, on CoNLL-2003 test. Writes the table into
# docs/benchmarks.md between the bench-topics-e2e markers (each run's training command is read
# from its training_args.json).
#   scripts/bench-topics-e2e.sh RUN [RUN ...]
# About a minute per run on 2 cores (three more with CoNLL-2003 test).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/bench-topics-e2e.sh RUN [RUN ...]" >&2; exit 2; }
for run in "$@"; do
  [ -f "$run/config.json" ] || { echo "error: $run is not a model directory" >&2; exit 1; }
done
conll=../shared/data/conll2003/test.conll
cargo build --release --locked --bin newstag
bin=target/release/newstag
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The held-out articles of 800 words or fewer, to score the short ones on their own too.
python3 - data/heldout.jsonl "$tmp/heldout-short.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f, open(sys.argv[2], "w", encoding="utf-8") as out:
    for line in f:
        if line.strip() and len(json.loads(line)["text"].split()) <= 800:
            out.write(line)
PY
i=0
for run in "$@"; do
  "$bin" eval --model "$run" --precision f32 --data "$tmp/heldout-short.jsonl" --json "$tmp/$i-short.json" > /dev/null
  for set in dev heldout test; do
    "$bin" eval --model "$run" --precision f32 --data "data/$set.jsonl" --json "$tmp/$i-$set.json" > /dev/null
  done
  if [ -f "$conll" ]; then
    "$bin" eval --model "$run" --precision f32 --data "$conll" --json "$tmp/$i-conll.json" > /dev/null
  fi
  i=$((i + 1))
done
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
flags=$(grep -o -w 'avx512f\|avx512_vnni\|avx512_bf16\|amx_bf16\|amx_int8\|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')
python3 - "$tmp" "$cpu" "$flags" "$@" <<'PY'
import json, os, sys, datetime
tmp, cpu, flags, runs = sys.argv[1], sys.argv[2], sys.argv[3].strip(), sys.argv[4:]
def load(i, name):
    p = os.path.join(tmp, f"{i}-{name}.json")
    return json.load(open(p)) if os.path.exists(p) else None
def recalls(t):
    return " / ".join(f"{t['per_label'][k]['recall']:.2f}" if t["per_label"][k]["support"] else "-"
                      for k in t["per_label"])
def long_cells(t):
    l = t.get("long_articles")
    if not l:
        return "- | -"
    return f"{l['micro']['f1']:.3f} ({l['documents']}) | {recalls(l)}"
labels = None
rows, commands = [], []
for i, run in enumerate(runs):
    dev, held, test, conll, short = (load(i, s) for s in ("dev", "heldout", "test", "conll", "short"))
    labels = labels or " / ".join(held["topics"]["per_label"])
    cells = [f"{dev['topics']['micro']['f1']:.3f}",
             f"{held['topics']['micro']['f1']:.3f}", recalls(held["topics"]),
             f"{short['topics']['micro']['f1']:.3f} ({short['topics']['documents']}) | {recalls(short['topics'])}",
             long_cells(held["topics"]),
             f"{test['topics']['micro']['f1']:.3f}", recalls(test["topics"]),
             f"{test['entities']['micro']['f1']:.4f}",
             f"{conll['entities']['micro']['f1']:.4f}" if conll else "-"]
    rows.append(f"| `{run}` | " + " | ".join(cells) + " |")
    args_path = os.path.join(run, "training_args.json")
    if os.path.exists(args_path):
        a = json.load(open(args_path))
        o = a["options"]
        def files(kind):
            return " ".join(f"--{kind} {f['path']}" + (f" --{kind}-topics {f['topics']}" if f.get("topics") else "")
                            for f in a[kind])
        files = files("train") + " " + files("dev")
        commands.append(f"    {run}: newstag train --base {a['base']} {files} --epochs {o['epochs']} "
                        f"--batch-size {o['batch_windows']} --seed {o['seed']}"
                        + ("" if o.get("augment") else " (no augmentation)"))
section = (f"CPU: {cpu} ({flags}); {datetime.date.today()}; "
           f"`scripts/bench-topics-e2e.sh {' '.join(runs)}`.\n\n"
           "Runs (from their training_args.json):\n\n" + "\n".join(commands) + "\n\n"
           f"Topic micro-F1, recall per topic ({labels}), the held-out set's short (800 words or "
           "fewer) and long articles (over 800 words) on their own (count in brackets), and entity micro-F1; all through "
           "`newstag eval --precision f32` on articles JSONL except the CoNLL-2003 column (`eval` on "
           "test.conll). "
           "Thresholds and refits were chosen on dev only; held-out was never tuned on.\n\n"
           "| run | dev topic F1 | held-out topic F1 | held-out recall | held-out short F1 | held-out short recall "
           "| held-out long F1 | held-out long recall | test topic F1 | test recall | test entity F1 | CoNLL test entity F1 |\n"
           "|---|---:|---:|---|---:|---|---:|---|---:|---|---:|---:|\n" + "\n".join(rows) + "\n")
sys.path.insert(0, "scripts")
from doc_section import write_section
write_section("docs/benchmarks.md", "bench-topics-e2e", section,
              "End to end: models fine-tuned with passage pooling, written by "
              "`scripts/bench-topics-e2e.sh`.", after="<!-- bench-topics: end -->\n")
print(section)
PY
