#!/usr/bin/env bash
# Tokens/s per encoder family (issue 16): for each family's tiny random checkpoint
# (tests/fixtures/families/FAMILY/base: 2 layers, hidden 32, a real tokenizer of its kind) and for
# the real MiniLM base (models/all-MiniLM-L6-v2, when scripts/fetch-model.sh has fetched it),
# trains 40 steps on data/train.jsonl (real training tokens/s), then tags the held-out articles
# (data/heldout.jsonl, raw text) in f32 and at --precision auto. Windows are 256 sub-tokens, or the
# encoder's positions when it has fewer. Writes the table into docs/benchmarks.md between the
# bench-families markers. Run it on a quiet machine: nothing else compiling or running.
#   scripts/bench-families.sh
# About a minute per tiny family and two for MiniLM on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin newstag
bin=target/release/newstag
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
texts=data/heldout.jsonl

bases=()
for dir in tests/fixtures/families/*/; do
  bases+=("$(basename "$dir")=${dir}base")
done
[ -f models/all-MiniLM-L6-v2/config.json ] && bases+=("MiniLM (bert)=models/all-MiniLM-L6-v2")

rows=$work/rows.jsonl
for entry in "${bases[@]}"; do
  name=${entry%%=*}
  base=${entry#*=}
  out=$work/$(printf %s "$name" | tr -c "a-zA-Z0-9-" _)
  # The window: 256 sub-tokens, or every position the encoder has (RoBERTa's start after padding).
  window=$(python3 - "$base/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
offset = c.get("pad_token_id", 1) + 1 if c["model_type"] in ("roberta", "xlm-roberta") else 0
print(min(256, c.get("max_position_embeddings", 512) - offset))
PY
)
  "$bin" train --base "$base" --train data/train.jsonl --max-steps 40 --batch-size 8 \
    --window "$window" --overlap $((window / 4)) --no-augment --checkpoint-every 0 \
    --out "$out" 2>"$out.train.log"
  for precision in f32 auto; do
    "$bin" tag --model "$out" --precision "$precision" "$texts" --out "$out.$precision.jsonl" \
      2>"$out.$precision.log"
  done
  python3 - "$name" "$base" "$out" "$window" >>"$rows" <<'PY'
import json, re, sys
name, base, out, window = sys.argv[1:5]
config = json.load(open(f"{base}/config.json"))
model = json.load(open(f"{base}/tokenizer.json"))["model"]["type"]
train = [json.loads(l) for l in open(f"{out}/metrics.jsonl") if l.strip()][-1]
row = {"name": name, "model_type": config["model_type"], "tokenizer": model,
       "layers": config.get("num_hidden_layers", config.get("n_layers")),
       "hidden": config.get("hidden_size", config.get("dim")), "window": int(window),
       "train_tokens_per_s": train["tokens_per_s"]}
for p in ("f32", "auto"):
    log = open(f"{out}.{p}.log").read()
    m = re.search(r"([0-9]+) sub-tokens in [0-9.]+s \(([0-9]+) tokens/s\)", log)
    chosen = re.search(r"precision auto: (\w+)", log)
    row[p] = {"sub_tokens": int(m.group(1)), "tokens_per_s": int(m.group(2)),
              "precision": chosen.group(1) if chosen else p}
print(json.dumps(row))
PY
done

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
cores=$(nproc)
flags=$(grep -o -w 'avx512f\|avx512_vnni\|avx512_bf16\|amx_bf16\|amx_int8\|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')
python3 - "$rows" "$cpu" "$cores" "$flags" <<'PY'
import datetime, json, sys
sys.path.insert(0, "scripts")
from doc_section import write_section
rows_path, cpu, cores, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].strip()
rows = [json.loads(l) for l in open(rows_path)]
lines = [
    f"CPU: {cpu} ({flags}), {cores} cores; {datetime.date.today()}; `scripts/bench-families.sh`.",
    "",
    "| encoder | model_type | tokenizer | layers x hidden | window | training, real tokens/s "
    "| `tag` f32, tokens/s | `tag --precision auto`, tokens/s |",
    "|---|---|---|---|---|---|---|---|",
]
for r in rows:
    lines.append(
        f"| {r['name']} | {r['model_type']} | {r['tokenizer']} | {r['layers']} x {r['hidden']} "
        f"| {r['window']} | {r['train_tokens_per_s']:,.0f} | {r['f32']['tokens_per_s']:,} "
        f"({r['f32']['sub_tokens']:,} sub-tokens) | {r['auto']['tokens_per_s']:,} "
        f"({r['auto']['precision']}) |")
    print(lines[-1])
write_section("docs/benchmarks.md", "bench-families", "\n".join(lines) + "\n",
              "## Encoder families: tokens/s (issue 16)")
PY
