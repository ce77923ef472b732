#!/usr/bin/env bash
# CoNLL-2003 test entity F1 of trained runs through both paths (issue 16): `newstag eval` on the
# CoNLL file, and on the same articles as articles JSONL with character spans (`newstag convert`:
# tokens joined by spaces, sentences by newlines), the raw-text path `tag` takes. Both in f32, so
# the figures compare across CPUs. Writes the table into docs/benchmarks.md between the
# bench-conll-paths markers. Needs ../shared/data/conll2003 beside the checkout.
#   scripts/bench-conll-paths.sh RUN [RUN ...]
# About three minutes per run on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/bench-conll-paths.sh RUN [RUN ...]" >&2; exit 2; }
conll=../shared/data/conll2003/test.conll
[ -f "$conll" ] || { echo "error: $conll not found (the shared CoNLL-2003 folder)" >&2; exit 1; }
for run in "$@"; do
  [ -f "$run/config.json" ] || { echo "error: $run is not a model directory" >&2; exit 1; }
done
cargo build --release --locked --bin newstag
bin=target/release/newstag
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" convert "$conll" "$tmp/test.jsonl" 2>/dev/null
i=0
for run in "$@"; do
  "$bin" eval --model "$run" --precision f32 --data "$conll" --json "$tmp/$i-conll.json" >/dev/null
  "$bin" eval --model "$run" --precision f32 --data "$tmp/test.jsonl" --json "$tmp/$i-text.json" >/dev/null
  i=$((i + 1))
done
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
commit=$(git rev-parse --short HEAD)
python3 - "$tmp" "$cpu" "$commit" "$@" <<'PY'
import datetime, json, os, sys
sys.path.insert(0, "scripts")
from doc_section import write_section
tmp, cpu, commit, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
lines = [
    f"CPU: {cpu}; {datetime.date.today()}; commit {commit}; "
    f"`scripts/bench-conll-paths.sh {' '.join(runs)}`.",
    "",
    "| run | `eval` on test.conll: F1 (P / R) | the same articles as text (JSONL): F1 (P / R) "
    "| difference (points) |",
    "|---|---:|---:|---:|",
]
for i, run in enumerate(runs):
    f, t = (json.load(open(os.path.join(tmp, f"{i}-{k}.json")))["entities"]["micro"]
            for k in ("conll", "text"))
    cell = lambda m: f"{m['f1']:.4f} ({m['precision']:.4f} / {m['recall']:.4f})"
    lines.append(f"| `{run}` | {cell(f)} | {cell(t)} | {100 * (f['f1'] - t['f1']):+.2f} |")
    print(lines[-1])
write_section("docs/benchmarks.md", "bench-conll-paths", "\n".join(lines) + "\n",
              "### Both paths, measured")
PY
