#!/usr/bin/env bash
# `newstag serve` under load (issue 13), against the server a Python user would write (FastAPI +
# uvicorn around transformers' token-classification pipeline, same weights), on this machine's
# loopback; and `newstag tag` on the same articles. Not a test and not part of CI.
#
#   load     oha at 1, 8 and 64 concurrent clients: requests/s, tokens/s, p50/p99 latency,
#            peak RSS of the server, answers that were 200
#   batching serve's tokens/s at 64 clients against `newstag tag` on the same articles, PAIRS
#            times in turn (default 3; the median ratio is reported)
#   soak     RSS sampled once a second over SOAK requests at 64 clients (memory flat?)
# and writes the table into docs/benchmarks.md (between the bench-serve.sh markers of this CPU's
# instruction sets: each kind of CPU keeps its own table).
#
#   scripts/bench-serve.sh [MODEL]
# MODEL: a newstag model directory (default runs/serve-bench, fine-tuned briefly from MiniLM when
# missing: the speed does not depend on how well it is trained).
# Environment: REQUESTS (per level, newstag; default 3000), PY_REQUESTS (per level, Python;
# default 600), SOAK (default 100000; 0 skips it), THREADS (compute threads, default all
# cores), OUT (default out/bench-serve), VENV (a virtualenv with torch, transformers, fastapi,
# uvicorn; default .venv-bench, created from PyPI), QUIET_WAIT (seconds to wait for other builds
# to finish before measuring, default 600).
# Requests are the CoNLL-2003 test sentences when ../shared/data/conll2003 exists, else the
# sentences of data/test.jsonl. Tools: oha is installed with `cargo install --root .tools oha`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/bench-serve}
model=${1:-${MODEL:-runs/serve-bench}}
requests=${REQUESTS:-3000}
py_requests=${PY_REQUESTS:-600}
soak=${SOAK:-100000}
threads=${THREADS:-$(nproc)}
port=${PORT:-18080}
pyport=${PYPORT:-18081}
data=../shared/data/conll2003
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads

[ -x .tools/bin/oha ] || cargo install --root .tools oha --locked
oha=.tools/bin/oha
py=${VENV:-.venv-bench}/bin/python
if ! "$py" -c 'import torch, transformers, fastapi, uvicorn' 2>/dev/null; then
  python3 -m venv "${VENV:-.venv-bench}"
  "$py" -m pip install --quiet torch transformers fastapi uvicorn
fi
scripts/fetch-model.sh
cargo build --release --locked --bin newstag
bin=target/release/newstag
if [ ! -f "$model/model.safetensors" ]; then
  if [ -d "$data" ]; then
    train=(--train "$data/train.conll" --train-topics "$data/topics/train.jsonl")
  else
    train=(--train data/train.jsonl)
  fi
  "$bin" train --base models/all-MiniLM-L6-v2 "${train[@]}" --max-steps 40 --batch-size 8 \
    --epochs 1 --out "$model"
fi
rm -rf -- "$out"
mkdir -p "$out"
python3 scripts/bench_serve.py requests "$data" data/test.jsonl "$out"

# Wait (bounded) until no other build or test runs on the machine.
waited=0
while pgrep -x cargo > /dev/null || pgrep -x rustc > /dev/null; do
  [ "$waited" -ge "${QUIET_WAIT:-600}" ] && { echo "warning: still busy after ${waited}s; measuring anyway" >&2; break; }
  sleep 10; waited=$((waited + 10))
done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# newstag tag on the same articles: its summary line gives sub-tokens and tokens/s.
run_tag() {  # LOG
  "$bin" tag --model "$model" "$out/sentences.jsonl" --out "$out/tag.jsonl" 2> "$1"
  sed -n 's/.* sub-tokens in .*s (\([0-9]*\) tokens\/s).*/\1/p' "$1"
}
tag_tps=$(run_tag "$out/tag.log")
[ -n "$tag_tps" ] || { echo "error: tag failed (see $out/tag.log)" >&2; exit 1; }
tag_tokens=$(sed -n 's/.* failed, \([0-9]*\) sub-tokens in .*/\1/p' "$out/tag.log")
count=$(wc -l < "$out/sentences.jsonl")
tokens_per_request=$(python3 -c "print($tag_tokens / $count)")

hwm() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
wait_up() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/health" > /dev/null && return 0; sleep 0.5; done; return 1; }
run_oha() {  # NAME PORT CLIENTS COUNT
  "$oha" --no-tui --output-format json -n "$4" -c "$3" -m POST -H 'Content-Type: application/json' \
    -Z "$out/bodies.txt" "http://127.0.0.1:$2/v1/tag" > "$out/$1-c$3.json"
}

echo "== newstag serve" >&2
"$bin" serve --model "$model" --port "$port" 2> "$out/serve.log" &
ns_pid=$!
until curl -sf "http://127.0.0.1:$port/ready" > /dev/null; do sleep 0.2; done
run_oha ns "$port" 8 200   # warm-up
declare -A ns_rss py_rss
for c in 1 8 64; do run_oha ns "$port" "$c" "$requests"; ns_rss[$c]=$(hwm $ns_pid); done
curl -s "http://127.0.0.1:$port/metrics" > "$out/metrics-after-load.txt"
# Batching: tag and serve at 64 clients, one after the other, PAIRS times (this machine's speed
# drifts by a tenth or more over minutes; each pair shares its minute).
pairs=()
for i in $(seq "${PAIRS:-3}"); do
  t=$(run_tag "$out/tag-pair$i.log")
  [ -n "$t" ] || { echo "error: tag failed (see $out/tag-pair$i.log)" >&2; exit 1; }
  run_oha "pair$i" "$port" 64 "$requests"
  pairs+=("[$t, \"pair$i-c64.json\"]")
done
soak_json=null
if [ "$soak" -gt 0 ]; then
  python3 scripts/bench_serve.py rss "$ns_pid" "$out/soak-rss.jsonl" 100000 &
  rss_pid=$!
  run_oha soak "$port" 64 "$soak"
  kill "$rss_pid" 2> /dev/null || true
  soak_json=$(python3 - "$out" "$soak" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
rss = [json.loads(l)["rss_mib"] for l in open(f"{out}/soak-rss.jsonl")]
res = json.load(open(f"{out}/soak-c64.json"))
print(json.dumps({"requests": n, "rss_first": rss[min(10, len(rss) - 1)], "rss_max": max(rss),
                  "rss_last": rss[-1], "rps": res["summary"]["requestsPerSec"],
                  "ok": res.get("statusCodeDistribution", {}).get("200", 0)}))
PY
)
fi
kill -TERM "$ns_pid"; wait "$ns_pid" || true

echo "== Python: FastAPI + uvicorn + transformers pipeline" >&2
"$py" scripts/bench_serve.py server "$model" "$pyport" "$threads" 2> "$out/py.log" &
py_pid=$!
wait_up "$pyport"
run_oha py "$pyport" 8 50   # warm-up
for c in 1 8 64; do run_oha py "$pyport" "$c" "$py_requests"; py_rss[$c]=$(hwm $py_pid); done
kill -TERM "$py_pid"; wait "$py_pid" || true

cat > "$out/meta.json" <<JSON
{"model": "$model", "threads": $threads, "load_before": "$load_before",
 "tokens_per_request": $tokens_per_request, "tag_tokens_per_s": $tag_tps,
 "precision": "$(sed -n 's/^precision \(.*\) (.*/\1/p' "$out/serve.log" | head -1)",
 "pairs": [$(IFS=,; echo "${pairs[*]}")],
 "ns_rss_mib": {"1": ${ns_rss[1]}, "8": ${ns_rss[8]}, "64": ${ns_rss[64]}},
 "py_rss_mib": {"1": ${py_rss[1]}, "8": ${py_rss[8]}, "64": ${py_rss[64]}},
 "soak": $soak_json}
JSON
python3 scripts/bench_serve.py report "$out" docs/benchmarks.md
echo "table written to docs/benchmarks.md" >&2
