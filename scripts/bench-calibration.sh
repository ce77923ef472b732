#!/usr/bin/env bash
# Are the scores probabilities? Expected calibration error (10 bins) of entity scores and topic
# probabilities of a trained run on held-out data, with the run's dev-fitted calibration and
# without it (the same model with `newstag.calibration` removed from its config), and writes the
# table into docs/benchmarks.md between the bench-calibration markers.
#
#   scripts/bench-calibration.sh RUN NAME DATA [TOPICS_SIDECAR]
#
# RUN: a run directory trained by this newstag (calibrated at the end of training); NAME: a label
# for the row; DATA: articles JSONL or CoNLL; TOPICS_SIDECAR: the CoNLL file's topics, if any.
# Example: scripts/bench-calibration.sh runs/quickstart "project test split" data/test.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1 name=$2 data=$3 sidecar=${4:-}
bin=target/release/newstag
[ -x "$bin" ] || cargo build --release --locked
out=out/calibration
mkdir -p "$out"
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
cp "$run/model.safetensors" "$run/tokenizer.json" "$raw/"
python3 - "$run/config.json" "$raw/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.get("newstag", {}).pop("calibration", None)
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
topics=()
[ -n "$sidecar" ] && topics=(--topics "$sidecar")
slug=$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-')
"$bin" eval --model "$run" --data "$data" "${topics[@]}" --json "$out/$slug-calibrated.json" > /dev/null
"$bin" eval --model "$raw" --data "$data" "${topics[@]}" --json "$out/$slug-raw.json" > /dev/null
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
python3 - "$name" "$run" "$data" "$cpu" "$out/$slug-raw.json" "$out/$slug-calibrated.json" <<'PY'
import json, re, sys, datetime
name, run, data, cpu, raw, cal = sys.argv[1:]
def part(path, key):
    r = json.load(open(path))["calibration"].get(key)
    return f"{r['ece']:.4f} ({r['count']})" if r else "-"
def f1(path):
    r = json.load(open(path))
    e = r.get("entities") or {}
    t = r.get("topics") or {}
    return (f"{e['micro']['f1']:.4f}" if e else "-", f"{t['micro']['f1']:.4f}" if t else "-")
temp = json.load(open(f"{run}/config.json"))["newstag"].get("calibration", {})
row = (f"| {name} | `{run}` | {part(raw, 'entities')} | {part(cal, 'entities')} | "
       f"{part(raw, 'topics')} | {part(cal, 'topics')} | {f1(cal)[0]} | {f1(cal)[1]} | "
       f"{temp.get('entity_temperature', '-')} | {cpu}, {datetime.date.today()} |")
doc = "docs/benchmarks.md"
text = open(doc).read()
begin, end = "<!-- bench-calibration: begin -->", "<!-- bench-calibration: end -->"
header = ("| data | run | entity ECE uncalibrated (n) | entity ECE calibrated | topic ECE uncalibrated (n) "
          "| topic ECE calibrated | entity F1 | topic F1 | temperature | CPU, date |\n"
          "|---|---|---|---|---|---|---|---|---|---|\n")
if begin not in text:
    text += f"\n## Calibration of scores (issue 15)\n\nRows written by `scripts/bench-calibration.sh`.\n\n{begin}\n{header}{end}\n"
head, rest = text.split(begin, 1)
table, tail = rest.split(end, 1)
rows = [l for l in table.strip().splitlines()[2:] if not l.startswith(f"| {name} |")]
rows.append(row)
text = head + begin + "\n" + header + "\n".join(rows) + "\n" + end + tail
open(doc, "w").write(text)
print(row)
PY
