#!/usr/bin/env bash
# newstag on a GPU against PyTorch + transformers on the same card (issue 14), in two halves:
#
#   scripts/bench-gpu.sh pack [MODEL]
#       here, on the build machine: fills .gpu-bench/ (ignored) with everything the GPU machine
#       needs and cannot build or download: the newstag binary (scripts/build-cuda.sh's, or
#       BIN_SRC), MODEL (a newstag run directory, default runs/conll-sentence) with its weights
#       in bf16 (about 45 MB for MiniLM instead of 90: newstag and PyTorch both load them as
#       fp32, so both sides run the same weights), the CoNLL-2003 test sentences as JSONL and
#       CoNLL, and training sentences. Prints the size of each part (64 MiB may travel in all).
#
#   scripts/bench-gpu.sh run [--device cuda|cpu]
#       there, in one call (no Rust, no network): with the device tool,
#         run(command="bash scripts/bench-gpu.sh run", carry=[".gpu-bench"], timeout_s=480)
#       - `tag` on the device gives the same entities as on CPU (scores within 1e-4 in fp32);
#       - `tag` real tokens/s at each batch size in BATCHES, fp32 and bf16, with the peak GPU
#         memory of each (nvidia-smi, whole process), against PyTorch + transformers on the same
#         inputs (fp32 and bf16 autocast; peak = its caching allocator's);
#       - `eval` test F1 in fp32 and bf16;
#       - training real tokens/s over TRAIN_STEPS steps of TRAIN_BATCH sentences against
#         scripts/bench_torch.py's loop;
#       and writes every figure to $OUT (gpu-bench.json, gpu-bench.md: the table for
#       docs/benchmarks.md, and the logs). With --device cpu it runs the same steps on the CPU
#       (the check that the script works before a GPU is spent on it); PyTorch's side is skipped
#       where python3 cannot import torch.
#
# Environment (run): DEVICE (default cuda; --device overrides), BATCHES (default "32 256"),
#   SENTENCES (test sentences to use; default all 3,453), TRAIN_STEPS (200), TRAIN_BATCH (32),
#   PY (python3), PACK (.gpu-bench), OUT (out/bench-gpu where the device tool sets none).
# Environment (pack): BIN_SRC (default target/cuda/release/newstag), CONLL (default
#   ../shared/data/conll2003), TRAIN_SENTENCES (sentences of train.conll to pack, default 6400: 200 steps of 32).
set -euo pipefail
cd "$(dirname "$0")/.."
pack=${PACK:-.gpu-bench}
py=${PY:-python3}

die() { echo "error: $*" >&2; exit 1; }

# --- pack ---------------------------------------------------------------------------------------

# Copies a safetensors file with every F32 tensor rounded to BF16 (round to nearest even), with
# the standard library only (no numpy or torch here).
to_bf16() {
  python3 - "$1" "$2" <<'PY'
import array, json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    body = f.read()
meta = header.pop("__metadata__", None)
out_header, chunks, offset = {}, [], 0
for name in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
    t = header[name]
    a, b = t["data_offsets"]
    raw = body[a:b]
    dtype = t["dtype"]
    if dtype == "F32":
        words = array.array("I")
        words.frombytes(raw)
        if sys.byteorder != "little":
            words.byteswap()
        half = array.array("H", ((w + 0x7FFF + ((w >> 16) & 1)) >> 16 & 0xFFFF for w in words))
        if sys.byteorder != "little":
            half.byteswap()
        raw, dtype = half.tobytes(), "BF16"
    out_header[name] = {"dtype": dtype, "shape": t["shape"],
                        "data_offsets": [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
if meta is not None:
    out_header["__metadata__"] = meta
text = json.dumps(out_header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for c in chunks:
        f.write(c)
PY
}

cmd_pack() {
  local model=${1:-runs/conll-sentence}
  local bin=${BIN_SRC:-target/cuda/release/newstag}
  local conll=${CONLL:-../shared/data/conll2003}
  [[ -x $bin ]] || die "no binary at $bin (scripts/build-cuda.sh builds it; BIN_SRC picks another)"
  for f in config.json tokenizer.json model.safetensors; do
    [[ -f $model/$f ]] || die "$model/$f not found (MODEL: a newstag run directory)"
  done
  [[ -f $conll/test.conll && -f $conll/train.conll ]] || die "$conll/{test,train}.conll not found"
  rm -rf -- "$pack"
  mkdir -p "$pack/model" "$pack/data"
  # Stripped and xz-compressed with Python's lzma (its embedded PTX is text; xz the tool may be
  # missing there, Python's module is not): `run` unpacks it.
  cp "$bin" "$pack/newstag"
  strip "$pack/newstag" 2>/dev/null || true
  python3 -c 'import lzma, shutil, sys
with open(sys.argv[1], "rb") as s, lzma.open(sys.argv[1] + ".xz", "wb", preset=9 | lzma.PRESET_EXTREME) as d:
    shutil.copyfileobj(s, d)' "$pack/newstag"
  rm "$pack/newstag"
  cp "$model/config.json" "$model/tokenizer.json" "$pack/model/"
  to_bf16 "$model/model.safetensors" "$pack/model/model.safetensors"
  local tmp
  tmp=$(mktemp -d)
  python3 scripts/bench_files.py inputs "$conll" "$tmp" > /dev/null
  cp "$tmp/test.jsonl" "$pack/data/test.jsonl"
  grep -v -- '-DOCSTART-' "$conll/test.conll" > "$pack/data/test.conll"
  # The first TRAIN_SENTENCES sentences (blank-line separated) of the training sentences.
  awk -v n="${TRAIN_SENTENCES:-6400}" 'BEGIN {RS=""; ORS="\n\n"} NR <= n' "$tmp/train.conll" \
    > "$pack/data/train.conll"
  rm -rf -- "$tmp"
  echo "packed $pack:"
  du -b "$pack/newstag.xz" "$pack/model/"* "$pack/data/"* | awk '{printf "  %8.1f MiB  %s\n", $1 / 1048576, $2}'
  local total tree
  total=$(du -sb "$pack" | awk '{print $1}')
  tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | awk '{print $1}')
  awk -v p="$total" -v t="$tree" 'BEGIN {printf "  %8.1f MiB  in all, with the tracked tree (%.1f MiB): %.1f MiB of the 64 MiB that travel\n", p / 1048576, t / 1048576, (p + t) / 1048576}'
  ((total + tree < 62 * 1048576)) || die "$pack and the tree exceed 62 MiB: they would not travel"
}

# --- run ----------------------------------------------------------------------------------------

# Makes the CUDA libraries the binary was linked against findable: PyTorch's CUDA 13 wheels on the
# GPU machine (nvidia/cu13/lib), then a system toolkit.
cuda_libs() {
  local dirs=()
  local site
  site=$("$py" -c 'import nvidia, os; print(" ".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null || true)
  for d in $site /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $d ]] && dirs+=("$d")
  done
  if ((${#dirs[@]})); then
    LD_LIBRARY_PATH="$(IFS=:; echo "${dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
  fi
  local missing
  missing=$(ldd "$bin" | awk '/not found/ {print $1}' | tr '\n' ' ')
  [[ -z $missing ]] || die "$bin needs $missing (not in ${dirs[*]:-any CUDA library folder})"
}

# Runs a command while sampling the GPU's used memory every 50 ms; writes the peak above the
# memory used before it started (MiB) to $1.mem ("null" without nvidia-smi).
with_gpu_memory() {
  local log=$1; shift
  if [[ $device == cpu ]] || ! command -v nvidia-smi > /dev/null; then
    echo null > "$log.mem"
    "$@"
    return
  fi
  local base
  base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -n 1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 50 > "$log.samples" &
  local sampler=$!
  local rc=0
  "$@" || rc=$?
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  awk -v b="$base" 'BEGIN {m = b} $1 + 0 > m {m = $1 + 0} END {print m - b}' "$log.samples" > "$log.mem"
  return $rc
}

# Real tokens/s from `tag`'s summary line ("... N sub-tokens in Ss (T tokens/s ...").
tag_tps() { sed -n 's/.* \([0-9]*\) sub-tokens in \([0-9.]*\)s.*/\1 \2/p' "$1" | awk '$2 > 0 {printf "%.1f", $1 / $2}'; }
train_tps() { sed -n 's/^done: .* steps in .*s, \([0-9]*\) tokens\/s.*/\1/p' "$1"; }
f1_of() { python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["entities"]["micro"]["f1"])' "$1" 2>/dev/null || echo null; }
# Same entities (spans, labels) per article in two `tag` outputs, and scores within MAX of each
# other? Writes the counts to OUT; exits 1 otherwise. Standard library only.
compare_entities() {
  python3 - "$@" <<'PY'
import json, sys
ours, theirs, out, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
read = lambda p: {r["id"]: r for r in map(json.loads, filter(str.strip, open(p, encoding="utf-8")))}
a, b = read(ours), read(theirs)
spans = lambda r: [(e["start"], e["end"], e["label"]) for e in r.get("entities", [])]
differ = sorted(k for k in b if k not in a or spans(a[k]) != spans(b[k]))
diff = max((abs(x["score"] - y["score"]) for k in b if k in a and k not in differ
            for x, y in zip(a[k]["entities"], b[k]["entities"])), default=0.0)
res = {"articles": len(b), "same_entities": len(b) - len(differ),
       "entities": sum(len(r["entities"]) for r in b.values()),
       "max_score_difference": diff, "differing_ids": differ[:20]}
json.dump(res, open(out, "w"), indent=2)
if differ:
    sys.exit(f"entities differ in {len(differ)} article(s), e.g. {differ[:5]}")
if diff > limit:
    sys.exit(f"scores differ by {diff:.3g} (more than {limit})")
PY
}
json_or_null() { [[ -n ${1:-} ]] && echo "$1" || echo null; }

cmd_run() {
  device=${DEVICE:-cuda}
  while (($#)); do
    case $1 in
      --device) device=${2:?--device needs a value}; shift 2 ;;
      *) die "unknown argument $1 (expected --device cuda|cpu)" ;;
    esac
  done
  local out=${OUT:-out/bench-gpu}
  local model=$pack/model data=$pack/data
  if [[ -n ${BIN:-} ]]; then
    bin=$BIN
  else
    [[ -f $pack/newstag.xz ]] || die "$pack/newstag.xz not found: run 'scripts/bench-gpu.sh pack' on the build machine and carry $pack"
    bin=$(mktemp -d)/newstag
    python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as s, open(sys.argv[2], "wb") as d:
    shutil.copyfileobj(s, d)' "$pack/newstag.xz" "$bin"
    chmod +x "$bin"
  fi
  [[ -x $bin ]] || die "$bin is not an executable"
  [[ -f $model/model.safetensors && -f $data/test.jsonl ]] || die "$pack is incomplete: pack it again"
  mkdir -p "$out"
  [[ $device == cpu ]] || cuda_libs
  local batches=(${BATCHES:-32 256})
  local steps=${TRAIN_STEPS:-200} tbatch=${TRAIN_BATCH:-32}
  local test=$data/test.jsonl conll=$data/test.conll
  if [[ -n ${SENTENCES:-} ]]; then
    head -n "$SENTENCES" "$data/test.jsonl" > "$out/test.jsonl"
    awk -v n="$SENTENCES" 'BEGIN {RS=""; ORS="\n\n"} NR <= n' "$data/test.conll" > "$out/test.conll"
    test=$out/test.jsonl conll=$out/test.conll
  fi
  local have_torch=0
  "$py" -c 'import torch, transformers' 2>/dev/null && have_torch=1
  echo "== bench-gpu: device $device, batches ${batches[*]}, $(wc -l < "$test") sentences, torch: $have_torch" >&2
  [[ $device == cpu ]] || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true

  echo "== newstag: CPU reference" >&2
  "$bin" tag --model "$model" --device cpu --batch-size 32 "$test" --out "$out/cpu.jsonl" 2> "$out/cpu.log"

  local figures=() status=0
  for precision in f32 bf16; do
    for b in "${batches[@]}"; do
      local name=ns-$precision-b$b
      echo "== newstag: tag $precision batch $b" >&2
      if with_gpu_memory "$out/$name" "$bin" tag --model "$model" --device "$device" \
          --precision "$precision" --batch-size "$b" "$test" --out "$out/$name.jsonl" 2> "$out/$name.log"; then
        figures+=("\"$name\": {\"tokens_per_s\": $(json_or_null "$(tag_tps "$out/$name.log")"), \"peak_gpu_mib\": $(cat "$out/$name.mem")}")
      else
        local why
        why=$(grep -m1 -i error "$out/$name.log" | tr -d '"\\' | cut -c1-200)
        figures+=("\"$name\": {\"error\": \"${why:-failed}\"}")
        echo "   failed: ${why:-see $out/$name.log}" >&2
      fi
    done
  done
  # Every fp32 batch size against the CPU at batch 32: the device, and batch composition.
  echo "== newstag: same entities as on CPU" >&2
  local same=()
  for b in "${batches[@]}"; do
    [[ -f $out/ns-f32-b$b.jsonl ]] || { status=1; continue; }
    if ! compare_entities "$out/ns-f32-b$b.jsonl" "$out/cpu.jsonl" \
        "$out/compare-cpu-b$b.json" 1e-4 > /dev/null 2> "$out/compare-cpu-b$b.log"; then
      echo "   batch $b: $(cat "$out/compare-cpu-b$b.log")" >&2
      status=1
    fi
    [[ -f $out/compare-cpu-b$b.json ]] && same+=("\"b$b\": $(cat "$out/compare-cpu-b$b.json")")
  done
  local f1_f32 f1_bf16
  "$bin" eval --model "$model" --data "$conll" --device "$device" --json "$out/eval-f32.json" > /dev/null 2> "$out/eval-f32.log" || true
  "$bin" eval --model "$model" --data "$conll" --device "$device" --precision bf16 --json "$out/eval-bf16.json" > /dev/null 2> "$out/eval-bf16.log" || true
  f1_f32=$(f1_of "$out/eval-f32.json"); f1_bf16=$(f1_of "$out/eval-bf16.json")

  echo "== newstag: training, $steps steps of $tbatch" >&2
  rm -rf -- "$out/ns-train"
  local ns_train=null
  if with_gpu_memory "$out/ns-train" "$bin" train --device "$device" --base "$model" \
      --train "$data/train.conll" --max-steps "$steps" --batch-size "$tbatch" --epochs 1 \
      --checkpoint-every 0 --out "$out/ns-train" 2> "$out/ns-train.log"; then
    ns_train="{\"tokens_per_s\": $(json_or_null "$(train_tps "$out/ns-train.log")"), \"peak_gpu_mib\": $(cat "$out/ns-train.mem")}"
  else
    echo "   training failed: $(tail -n 2 "$out/ns-train.log")" >&2
    status=1
  fi
  rm -rf -- "$out/ns-train"  # its model would not fit in what comes back

  local torch_infer=null torch_train=null
  if ((have_torch)); then
    echo "== PyTorch: tag" >&2
    DEVICE=$device "$py" scripts/bench_torch.py batches "$model" "$test" "$out/torch-batches.json" "${batches[@]}" \
      > /dev/null 2> "$out/torch-batches.log" && torch_infer=$(cat "$out/torch-batches.json") \
      || { echo "   failed: $(tail -n 2 "$out/torch-batches.log")" >&2; status=1; }
    echo "== PyTorch: training" >&2
    DEVICE=$device "$py" scripts/bench_torch.py train "$model" "$data/train.conll" "$out/torch-train.json" "$steps" "$tbatch" \
      > /dev/null 2> "$out/torch-train.log" && torch_train=$(cat "$out/torch-train.json") \
      || { echo "   failed: $(tail -n 2 "$out/torch-train.log")" >&2; status=1; }
  else
    echo "== PyTorch: skipped ($py cannot import torch and transformers)" >&2
  fi

  cat > "$out/gpu-bench.json" <<EOF
{"device": "$device", "gpu": "$( [[ $device == cpu ]] || nvidia-smi --query-gpu=name --format=csv,noheader -i 0 2>/dev/null | head -n 1)",
 "sentences": $(wc -l < "$test"), "newstag": {$(IFS=,; echo "${figures[*]}")},
 "same_as_cpu": {$(IFS=,; echo "${same[*]}")}, "test_f1": {"f32": $f1_f32, "bf16": $f1_bf16},
 "train_steps": $steps, "train_batch": $tbatch, "newstag_train": $ns_train, "torch_infer": $torch_infer, "torch_train": $torch_train}
EOF
  python3 - "$out/gpu-bench.json" "$out/gpu-bench.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ns, ti = r["newstag"], r["torch_infer"] or {}
def num(x, fmt="{:,.0f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "–"
lines = [f"GPU run on {r['gpu'] or r['device']}, {r['sentences']} CoNLL-2003 test sentences "
         "(real tokens/s: [CLS], [SEP] and sub-tokens, no padding).", "",
         "| tag | newstag tokens/s | newstag peak GPU MiB | PyTorch tokens/s | PyTorch peak MiB (allocator) | ratio |",
         "| --- | ---: | ---: | ---: | ---: | ---: |"]
for key, fig in ns.items():
    _, precision, b = key.split("-")
    t = ti.get(f"batch{b[1:]}_{'fp32' if precision == 'f32' else 'bf16'}", {})
    mine, theirs = fig.get("tokens_per_s"), t.get("tokens_per_s")
    ratio = f"{mine / theirs:.2f}x" if mine and theirs else "–"
    label = f"{precision} batch {b[1:]}"
    if "error" in fig:
        lines.append(f"| {label} | {fig['error']} | | {num(theirs)} | {num(t.get('peak_device_mib'))} | |")
    else:
        lines.append(f"| {label} | {num(mine)} | {num(fig.get('peak_gpu_mib'))} | {num(theirs)} | "
                     f"{num(t.get('peak_device_mib'))} | {ratio} |")
nt, tt = r["newstag_train"] or {}, r["torch_train"] or {}
mine, theirs = nt.get("tokens_per_s"), tt.get("tokens_per_s")
lines += ["", "| train (real tokens/s) | newstag | PyTorch | ratio |", "| --- | ---: | ---: | ---: |",
          f"| {r['train_steps']} steps, batch {r['train_batch']} | {num(mine)} | {num(theirs)} | "
          + (f"{mine / theirs:.2f}x" if mine and theirs else "–") + " |"]
lines.append("")
for b, same in r["same_as_cpu"].items():
    lines.append(f"fp32 batch {b[1:]} against CPU batch 32: same entities in "
                 f"{same['same_entities']} of {same['articles']} sentences, largest score "
                 f"difference {same['max_score_difference']:.2g}.")
f1 = r["test_f1"]
lines.append(f"Test F1: fp32 {num(f1['f32'], '{:.4f}')}, bf16 {num(f1['bf16'], '{:.4f}')}.")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
  # The table goes into docs/benchmarks.md between the markers (on the GPU machine this changes
  # its copy of the tree: the figures come back through $OUT).
  if grep -q '<!-- bench-gpu.sh: begin' docs/benchmarks.md && [[ $device != cpu ]]; then
    python3 - "$out/gpu-bench.md" docs/benchmarks.md <<'PY'
import sys
table, doc = open(sys.argv[1]).read(), sys.argv[2]
text = open(doc).read()
a = text.index("<!-- bench-gpu.sh: begin")
a = text.index("\n", a) + 1
b = text.index("<!-- bench-gpu.sh: end")
open(doc, "w").write(text[:a] + table + text[b:])
PY
    cp docs/benchmarks.md "$out/benchmarks.md"
  fi
  # What comes back from the device tool: at most 8 files. Keep the figures and the key logs.
  (cd "$out" && find . -maxdepth 1 -type f \( -name '*.log' -o -name 'compare-*.json' -o -name '*.mem' \) -print0 |
    tar -czf logs.tgz --null -T -) || true
  find "$out" -maxdepth 1 -type f ! -name 'gpu-bench.*' ! -name 'benchmarks.md' ! -name 'logs.tgz' -delete
  return $status
}

case ${1:-} in
  pack) shift; cmd_pack "$@" ;;
  run) shift; cmd_run "$@" ;;
  *) die "usage: scripts/bench-gpu.sh pack [MODEL] | run [--device cuda|cpu]" ;;
esac
