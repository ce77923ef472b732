#!/usr/bin/env python3
"""Input files and the report of scripts/bench.sh (standard library only).

  inputs CONLL_DIR OUT_DIR   write the benchmark's inputs from CoNLL-2003 (into OUT_DIR only):
                             test.jsonl (each test sentence an article), one.jsonl (one sentence,
                             for load time), words100/1000/10000.jsonl (test text cut into articles
                             of about that many words, about 20,000 words per file),
                             stream1k/10k.jsonl (1,000 and 10,000 articles of 5 sentences),
                             train.conll (training sentences without -DOCSTART-)
  report OUT_DIR DOC.md      write the results in OUT_DIR into DOC.md between the bench.sh markers
"""

import json
import os
import platform
import subprocess
import sys
from datetime import date

from doc_section import ISA, cpu_isa, write_cpu_section

FLOP_PER_TOKEN = 6 * (4 * 384 * 384 + 2 * 384 * 1536) * 2


def sentences(path):
    sents, words = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if words:
                    sents.append(words)
                words = []
                continue
            words.append(cols[0])
    if words:
        sents.append(words)
    return sents


def write_jsonl(path, texts, prefix):
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"{prefix}{i}", "text": t}) + "\n")


def inputs(conll_dir, out):
    test = sentences(os.path.join(conll_dir, "test.conll"))
    write_jsonl(os.path.join(out, "test.jsonl"), [" ".join(s) for s in test], "s")
    write_jsonl(os.path.join(out, "one.jsonl"), [" ".join(test[1])], "one")
    flat = [w for s in test for w in s]
    for n in (100, 1000, 10000):
        count = max(2, 20000 // n)
        texts = [" ".join(flat[(i * n) % len(flat):][:n]) for i in range(count)]
        write_jsonl(os.path.join(out, f"words{n}.jsonl"), texts, f"w{n}-")
    for n, name in ((1000, "stream1k"), (10000, "stream10k")):
        texts = [" ".join(" ".join(test[(5 * i + j) % len(test)]) for j in range(5))
                 for i in range(n)]
        write_jsonl(os.path.join(out, f"{name}.jsonl"), texts, f"{name}-")
    with open(os.path.join(conll_dir, "train.conll"), encoding="utf-8") as src, \
            open(os.path.join(out, "train.conll"), "w", encoding="utf-8") as dst:
        dst.writelines(line for line in src if not line.startswith("-DOCSTART-"))


def load(out, name):
    with open(os.path.join(out, name), encoding="utf-8") as f:
        return json.load(f)


def ratio(a, b):
    return f"{a / b:.2f}x"


def cpu():
    """This CPU's model name and which of ISA it has and lacks, e.g. "Intel(R) Xeon(R) Processor
    (avx2 avx512f avx512_vnni; lacks amx_tile amx_int8 amx_bf16)"."""
    name, has, lacks = cpu_isa()
    return f"{name} ({' '.join(has) or 'none of ' + ' '.join(ISA)}" + \
        (f"; lacks {' '.join(lacks)})" if lacks and has else ")")


def machine():
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu()}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()}"


def fp32_kernels(mm):
    """Which fp32 product newstag's inference ran (examples/matmul.rs says)."""
    kernel = mm.get("fp32_kernel", "candle")
    return "candle's gemm 0.19" if kernel == "candle" else f"newstag's own {kernel} kernel"


def row(*cells):
    return "| " + " | ".join(cells) + " |"


def versus(ours, *peers):
    """newstag's ratio to each peer's figure, e.g. "1.21x; 0.95x; 0.52x"."""
    return "; ".join(ratio(ours, p) for p in peers)


def ort_setup(ort, per_channel, cmp_pc, f1_fp32):
    """The sentence under the table: how the ONNX Runtime side was built, and the per-channel
    int8 variant's figures (not a column: quantize_dynamic's default is per tensor)."""
    fusions = ", ".join(f"{k} x{v}" for k, v in sorted(ort["fusions"].items()))
    pc_f1 = per_channel["f1"]["entities"]["micro"]["f1"]
    return (
        f"ONNX Runtime {ort['onnxruntime']} (`scripts/bench_ort.py`): `torch.onnx.export` of the "
        f"same weights (opset 17, dynamic batch and sequence axes), fused by "
        f"`onnxruntime.transformers.optimizer.optimize_model` (model_type bert: {fusions}), a CPU "
        f"session with intra_op_num_threads = {ort['threads']} and one inter-op thread. Its int8 "
        f"column is `quantize_dynamic` of the fused model with the defaults (int8 weights per "
        f"tensor, activations quantised per tensor at run time: an article's int8 logits depend on "
        f"its batch-mates). With `per_channel=True`: {per_channel['batch32_sorted']['tokens_per_s']:,.0f} "
        f"tokens/s at batch 32, {per_channel['batch1']['tokens_per_s']:,.0f} at batch 1, test F1 "
        f"{pc_f1:.4f} ({100 * (pc_f1 - f1_fp32):+.2f} points against ONNX Runtime fp32), the same "
        f"entities as newstag in {cmp_pc['same_entities']:,} of {cmp_pc['articles']:,} sentences.")


def report(out, doc):
    ns = load(out, "newstag.json")
    pt = load(out, "torch-infer.json")
    ptt = load(out, "torch-train.json")
    pts = load(out, "torch-scale.json")
    mm_ns = load(out, "newstag-matmul.json")
    mm_pt = load(out, "torch-matmul.json")
    cmp32 = load(out, "compare-batch32.json")
    cmp1 = load(out, "compare-batch1.json")
    of, oi, opc = (load(out, f"ort-{v}.json") for v in ("fp32", "int8", "int8-per-channel"))
    cmp_of, cmp_oi, cmp_opc = (load(out, f"compare-ort-{v}.json")
                               for v in ("fp32", "int8", "int8-per-channel"))
    ns["f1"] = load(out, "newstag-eval.json")["entities"]["micro"]["f1"]
    pt_f1 = load(out, "torch-f1.json")["entities"]["micro"]["f1"]
    of_f1, oi_f1 = (o["f1"]["entities"]["micro"]["f1"] for o in (of, oi))
    bf16 = ns.get("batch32_bf16_s") is not None
    # Same tokenizer and windows on every side, so PyTorch's count of real tokens is newstag's too.
    ns["batch32_tps"] = pt["batch32_sorted"]["real_tokens"] / ns["batch32_s"]
    ns["batch1_tps"] = pt["batch1"]["real_tokens"] / ns["batch1_s"]
    if bf16:
        ns["batch32_bf16_tps"] = pt["batch32_sorted"]["real_tokens"] / ns["batch32_bf16_s"]
        ns["f1_bf16"] = load(out, "newstag-eval-bf16.json")["entities"]["micro"]["f1"]
    ns["batch32_int8_tps"] = pt["batch32_sorted"]["real_tokens"] / ns["batch32_int8_s"]
    ns["batch1_int8_tps"] = pt["batch1"]["real_tokens"] / ns["batch1_int8_s"]
    ns["f1_int8"] = load(out, "newstag-eval-int8.json")["entities"]["micro"]["f1"]
    ns["scale"] = {k: pts[k]["real_tokens"] / s for k, s in ns["scale_s"].items()}
    rust = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    ceiling = mm_ns["fp32"] * 1e9 / FLOP_PER_TOKEN
    this_cpu = cpu()

    def frac(tps):
        return f"{tps * FLOP_PER_TOKEN / 1e9 / mm_ns['fp32']:.0%}"

    def tps(fig):
        return f"{fig['tokens_per_s']:,.0f}"

    def same(c):
        return f"{c['same_entities']:,} (scores within {c['max_score_difference']:.1e})"

    b32 = [pt["batch32_sorted"], of["batch32_sorted"], oi["batch32_sorted"]]
    b1 = [pt["batch1"], of["batch1"], oi["batch1"]]
    lines = [
        "",
        f"Run on {date.today().isoformat()} by `scripts/bench.sh` (model `{ns['model']}`, "
        f"{ns['threads']} threads on each side). Machine: {machine()}. "
        f"newstag {ns['version']} ({rust}, candle 0.11.1; fp32 products on "
        f"{fp32_kernels(mm_ns)}); "
        f"torch {mm_pt['torch']} (CPU capability {mm_pt['cpu_capability']}), "
        f"transformers {mm_pt['transformers']}, onnxruntime {of['onnxruntime']}, "
        f"Python {platform.python_version()}.",
        "",
        f"Inputs: the {pt['articles']:,} CoNLL-2003 test sentences, each an article (real tokens: "
        "[CLS], [SEP] and sub-tokens, counted the same on every side). newstag figures come from `newstag tag` "
        "(its summary line: reading, tokenising, the forward passes, decoding and writing JSONL); "
        "PyTorch and ONNX Runtime figures time building the padded batch, the forward pass and "
        "reading the logits back (tokenising and decoding excluded), on the same windows in the "
        "same batches. All run the same fine-tuned weights. Test F1: newstag's from `newstag "
        "eval`; PyTorch's and ONNX Runtime's from `scripts/bench_torch.py`'s scoring of the same "
        "words (first sub-token per word, the same Viterbi, exact span and type).",
        "",
        row(f"figure, on {this_cpu}", "newstag", "PyTorch", "ONNX Runtime fp32", "ONNX Runtime int8",
            "newstag against PyTorch; ORT fp32; ORT int8"),
        "|---|---|---|---|---|---|",
        row("inference, batch 32, tokens/s (newstag buckets by length; the others sorted by length)",
            f"{ns['batch32_tps']:,.0f}", *map(tps, b32),
            versus(ns["batch32_tps"], *(f["tokens_per_s"] for f in b32))),
        row("inference, batch 32, against PyTorch in file order", f"{ns['batch32_tps']:,.0f}",
            tps(pt["batch32_file_order"]), "", "",
            ratio(ns["batch32_tps"], pt["batch32_file_order"]["tokens_per_s"])),
        row("inference, batch 32, **newstag bf16** products against the others as above (sorted "
            "by length)", f"{ns['batch32_bf16_tps']:,.0f}", *map(tps, b32),
            versus(ns["batch32_bf16_tps"], *(f["tokens_per_s"] for f in b32)))
        if bf16 else row("inference, batch 32, bf16", "(this CPU lacks AVX512-BF16)", "", "", "", ""),
        row("inference, batch 32, bf16 on both sides (newstag `--precision bf16`; PyTorch bf16 "
            "autocast, sorted by length)", f"{ns['batch32_bf16_tps']:,.0f}",
            tps(pt["batch32_sorted_bf16"]), "", "",
            ratio(ns["batch32_bf16_tps"], pt["batch32_sorted_bf16"]["tokens_per_s"]))
        if bf16 else row("inference, batch 32, PyTorch bf16 autocast (sorted by length)", "",
                         tps(pt["batch32_sorted_bf16"]), "", "", ""),
        row("inference, batch 32, **newstag int8** (`--precision int8`) against the others as "
            "above", f"{ns['batch32_int8_tps']:,.0f}", *map(tps, b32),
            versus(ns["batch32_int8_tps"], *(f["tokens_per_s"] for f in b32))),
        row("inference, batch 1, tokens/s (newstag: one window per forward pass, as many passes "
            "side by side as there are cores; the others: one pass at a time on all threads)",
            f"{ns['batch1_tps']:,.0f}", *map(tps, b1),
            versus(ns["batch1_tps"], *(f["tokens_per_s"] for f in b1))),
        row("inference, batch 1, **newstag int8**", f"{ns['batch1_int8_tps']:,.0f}", *map(tps, b1),
            versus(ns["batch1_int8_tps"], *(f["tokens_per_s"] for f in b1))),
        row(f"fraction of newstag's fp32 matmul ceiling ({mm_ns['fp32']:.0f} GFLOP/s = "
            f"{ceiling:,.0f} tokens/s), batch 32", frac(ns["batch32_tps"]),
            *(frac(f["tokens_per_s"]) for f in b32), ""),
        row("training, 200 steps of 32 sentences, real tokens/s", f"{ns['train_tps']:,.0f}",
            f"{ptt['tokens_per_s']:,.0f} ({ptt['real_share_of_slots']:.0%} of its slots real)", "",
            "", ratio(ns["train_tps"], ptt["tokens_per_s"])),
        row("peak resident memory, training", f"{ns['train_rss_mib']:,.0f} MiB",
            f"{ptt['peak_rss_mib']:,.0f} MiB", "", "", ratio(ns["train_rss_mib"], ptt["peak_rss_mib"])),
        row("peak resident memory, inference batch 32", f"{ns['batch32_rss_mib']:,.0f} MiB",
            f"{pt['peak_rss_mib']:,.0f} MiB", "", "", ratio(ns["batch32_rss_mib"], pt["peak_rss_mib"])),
        row(f"model load (newstag: whole `tag` process on one sentence; PyTorch: from_pretrained, "
            f"first / warm, plus {pt['import_s']:.1f} s importing torch and transformers; ONNX "
            f"Runtime: creating the session)", f"{ns['load_s']:.2f} s",
            f"{pt['load_first_s']:.2f} / {pt['load_warm_s']:.2f} s", f"{of['load_s']:.2f} s",
            f"{oi['load_s']:.2f} s", ""),
        row(f"same entities as newstag, of {cmp32['articles']:,} sentences (PyTorch: against newstag "
            f"at batch 32 / batch 1; ONNX Runtime: at batch 32)", "",
            f"{cmp32['same_entities']:,} / {cmp1['same_entities']:,} (scores within "
            f"{max(cmp32['max_score_difference'], cmp1['max_score_difference']):.1e})",
            same(cmp_of), same(cmp_oi), ""),
        row("test entity F1, batch 32, newstag fp32 / int8" + (" / bf16" if bf16 else "")
            + f" (`--precision auto` chose {ns.get('auto') or '?'} here)",
            f"{ns['f1']:.4f} / {ns['f1_int8']:.4f}" + (f" / {ns['f1_bf16']:.4f}" if bf16 else ""),
            f"{pt_f1:.4f}",
            f"{of_f1:.4f}", f"{oi_f1:.4f} ({100 * (oi_f1 - of_f1):+.2f} points)", ""),
        row("matmul 4096x384 @ 384x1536, fp32 / bf16 GFLOP/s (newstag: the fp32 product inference "
            "uses, its own bf16 kernel)", f"{mm_ns['fp32']:.0f} / {mm_ns['bf16'] or 0:.0f}",
            f"{mm_pt['fp32']:.0f} / {mm_pt['bf16']:.0f}", "", "", ""),
        row("matmul 4096x384 @ 384x1536, int8 GOP/s of each newstag kernel this CPU runs "
            "(activations quantised per row inside; the first is the one int8 uses)",
            ", ".join(f"{k} {v:,.0f}" for k, v in mm_ns.get("int8", {}).items()), "", "", "", ""),
        "",
        ort_setup(of, opc, cmp_opc, of_f1),
        "",
        "How cost grows with article length (batch 32; articles cut from the test text; both sides "
        "use newstag's windows of 256 sub-tokens with 64 overlap):",
        "",
        row(f"articles, on {this_cpu}", "newstag tokens/s", "PyTorch tokens/s", "ratio"),
        "|---|---|---|---|",
    ]
    for n in (100, 1000, 10000):
        key = f"words{n}.jsonl"
        a, b = ns["scale"][key], pts[key]["tokens_per_s"]
        lines.append(f"| {n:,} words | {a:,.0f} | {b:,.0f} | {ratio(a, b)} |")
    lines += [
        "",
        f"Memory over a stream (`newstag tag`, batch 32, articles of 5 sentences): peak RSS "
        f"{ns['stream_rss_mib']['stream1k']:,.0f} MiB after 1,000 articles, "
        f"{ns['stream_rss_mib']['stream10k']:,.0f} MiB after 10,000.",
        "",
        "Commands: `scripts/bench.sh` (all of the above; results as JSON in `out/bench/`); the "
        "newstag side alone: `newstag tag --model MODEL --batch-size 32 [--precision bf16] "
        "out/bench/test.jsonl`, "
        "`newstag train --base models/all-MiniLM-L6-v2 --train out/bench/train.conll --max-steps "
        "200 --batch-size 32`, `cargo run --release --example matmul`; ONNX Runtime alone: "
        "`scripts/bench_ort.py export MODEL out/bench/onnx`, then `scripts/bench_ort.py infer MODEL "
        "out/bench/onnx fp32|int8|int8-per-channel out/bench/test.jsonl out/bench/test.conll "
        "OUT.json PREDS.jsonl`.",
        "",
    ]
    section = "\n".join(lines) + "\n"
    write_cpu_section(
        doc, "bench.sh", section,
        "## newstag, PyTorch and ONNX Runtime side by side on this CPU (issues 4 and 12)")
    print(section)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"inputs": inputs, "report": report}.get(cmd, lambda *_: sys.exit(__doc__))(*args)
