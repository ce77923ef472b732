#!/usr/bin/env python3
"""The PyTorch + transformers side of scripts/bench.sh, and the report it writes.

Subcommands:
  infer MODEL TEXTS OUT.json PREDS.jsonl
      load a newstag run directory as a BertForTokenClassification and tag TEXTS (JSONL with
      id/text) the way newstag does (windows, first sub-token per word, constrained Viterbi), at
      batch 32 in file order, batch 32 sorted by length, and batch 1, then batch 32 sorted with bf16
      autocast; write the timings and the entities of the fp32 sorted run (newstag's `tag`
      format) to PREDS
  scale MODEL OUT.json FILE...
      tokens/s at batch 32 (sorted) for each file of long articles
  train BASE CONLL OUT.json STEPS BATCH
      fine-tune BertForTokenClassification for STEPS optimiser steps on CoNLL sentences in random
      order (padding to the longest in each batch, as a transformers training loop does)
  matmul OUT.json
      GFLOP/s of torch.matmul at the FFN's shape, fp32 and bf16
  compare NEWSTAG.jsonl TORCH.jsonl OUT.json
      same entities (spans and labels) per article? exit 1 when any differ
  batches MODEL TEXTS OUT.json BATCH...
      tokens/s at each batch size (sorted by length), fp32 then bf16 autocast, with the peak
      memory the device's allocator held for each (scripts/bench-gpu.sh)
  f1 MODEL CONLL OUT.json
      entity F1 on a CoNLL file (each sentence an article, its own words; batch 32 sorted), scored
      as `newstag eval` scores it (exact span and type, micro over types)

DEVICE (environment) runs the model there: cpu (default) or cuda.

Throughput counts real tokens: [CLS], [SEP] and sub-tokens, no padding (as attention_mask.sum()).
Timings cover building the padded batch, the forward pass and reading the logits back; tokenising
and decoding are outside them (newstag's figures come from its own `tag` summary line, which
includes tokenising, decoding and writing the output).
"""

import json
import os
import random
import resource
import statistics
import sys
import time

import numpy as np

T0 = time.perf_counter()
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer, BertForTokenClassification  # noqa: E402

IMPORT_S = time.perf_counter() - T0
DEVICE = torch.device(os.environ.get("DEVICE", "cpu"))

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
from newstag_ref import decode_entities, encode, encode_words, word_logits  # noqa: E402

# The encoder's forward cost per token (6 layers x (4 * 384^2 + 2 * 384 * 1536) x 2 FLOP).
FLOP_PER_TOKEN = 6 * (4 * 384 * 384 + 2 * 384 * 1536) * 2


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def padded(rows):
    """Token ids and attention mask (int64, zero-padded to the longest row) of a batch of rows."""
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return ids, mask


class RunDirectory:
    """What every runtime needs from a newstag run directory besides the weights: its tokenizer,
    windows and tag names. Subclasses provide run(rows) -> (logits, seconds, real tokens)."""

    def __init__(self, model_dir):
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        window = (config.get("newstag") or {}).get("window", {"max_tokens": 256, "overlap": 64})
        self.window = (window["max_tokens"], window["overlap"])
        self.id2label = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]

    def entities(self, art, logits_of_window):
        return decode_entities(self.id2label, art["words"], word_logits(art, logits_of_window),
                               breaks=art.get("breaks", ()))


class Tagger(RunDirectory):
    """A newstag run directory driven through transformers."""

    def __init__(self, model_dir):
        t = time.perf_counter()
        super().__init__(model_dir)
        self.model = BertForTokenClassification.from_pretrained(model_dir, dtype=torch.float32)
        self.model.to(DEVICE).eval()
        self.load_s = time.perf_counter() - t
        self.bf16 = False  # bf16 autocast (oneDNN's bf16 products where the CPU has them)

    def run(self, rows):
        """Logits of each row (padded batch, forward, back to numpy), timed."""
        t = time.perf_counter()
        ids, mask = padded(rows)
        ids, mask_dev = torch.from_numpy(ids).to(DEVICE), torch.from_numpy(mask).to(DEVICE)
        with torch.inference_mode(), torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(input_ids=ids, attention_mask=mask_dev).logits.float().cpu().numpy()
        return logits, time.perf_counter() - t, int(mask.sum())


def throughput(tagger, arts, batch, order, keep=False):
    """Runs every window of `arts` in batches; returns the figures (and logits per window)."""
    items = [(a, k) for a, art in enumerate(arts) for k in range(len(art["rows"]))]
    if order == "sorted":
        items.sort(key=lambda it: len(arts[it[0]]["rows"][it[1]]))
    batches = [items[i:i + batch] for i in range(0, len(items), batch)]
    for b in batches[:3]:  # warm-up
        tagger.run([arts[a]["rows"][k] for a, k in b])
    out = {}
    secs, tokens, lat = 0.0, 0, []
    for b in batches:
        logits, dt, n = tagger.run([arts[a]["rows"][k] for a, k in b])
        secs += dt
        tokens += n
        lat.append(dt)
        if keep:
            for (a, k), row in zip(b, logits):
                out[(a, k)] = row
    lat.sort()
    fig = {"batch": batch, "order": order, "seconds": round(secs, 3), "real_tokens": tokens,
           "tokens_per_s": round(tokens / secs, 1),
           "latency_p50_ms": round(1000 * lat[len(lat) // 2], 3)}
    return fig, out


def tag_all(tagger, arts, batch, order):
    """Throughput figures at `batch` in `order`, and the entities of every article."""
    fig, logits = throughput(tagger, arts, batch, order, keep=True)
    ents = [tagger.entities(art, [logits[(a, k)] for k in range(len(art["rows"]))])
            for a, art in enumerate(arts)]
    return fig, ents


def write_preds(path, records, ents):
    """Entities per article in newstag's `tag` format (what `compare` reads)."""
    with open(path, "w", encoding="utf-8") as f:
        for r, e in zip(records, ents):
            f.write(json.dumps({"id": r["id"], "entities": e}) + "\n")


def conll_f1(tagger, sents):
    """Entity scores on CoNLL sentences `sents` ((words, tags) pairs), each sentence an article of
    its own words, batch 32 sorted by length. As `newstag eval`: gold entities read leniently
    (conlleval: an I-X not continuing an X starts one), an entity counts when its words and type
    match exactly, micro over types."""
    arts = [encode_words(tagger.tok, words, [(i, i + 1) for i in range(len(words))], tagger.window)
            for words, _ in sents]
    _, ents = tag_all(tagger, arts, 32, "sorted")
    gold = pred = correct = 0
    for (_, tags), found in zip(sents, ents):
        want = set(gold_entities(tags))
        got = {(e["start"], e["end"], e["label"]) for e in found}
        gold, pred, correct = gold + len(want), pred + len(got), correct + len(want & got)
    p = correct / pred if pred else 0.0
    r = correct / gold if gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"sentences": len(sents), "gold": gold, "predicted": pred, "correct": correct,
            "entities": {"micro": {"precision": p, "recall": r, "f1": f1}}}


def gold_entities(tags):
    """(start, end, label) of a sentence's IOB tags, read as newstag's entities_from_tags does."""
    out, open_ = [], None
    for i, tag in enumerate(tags + ["O"]):
        if open_ and tag == f"I-{open_[1]}":
            continue
        if open_:
            out.append((open_[0], i, open_[1]))
        open_ = (i, tag[2:]) if tag != "O" else None
    return out


def cmd_f1(model, conll, out):
    write_json(out, conll_f1(Tagger(model), read_conll_sentences(conll)))


def cmd_infer(model, texts, out, preds):
    records = read_jsonl(texts)
    tagger = Tagger(model)
    load_again = []
    for _ in range(3):
        t = time.perf_counter()
        BertForTokenClassification.from_pretrained(model, dtype=torch.float32).eval()
        load_again.append(time.perf_counter() - t)
    arts = [encode(tagger.tok, r["text"], tagger.window) for r in records]
    res = {"import_s": round(IMPORT_S, 3), "load_first_s": round(tagger.load_s, 3),
           "load_warm_s": round(statistics.median(load_again), 3), "threads": torch.get_num_threads(),
           "articles": len(arts)}
    res["batch32_file_order"], _ = throughput(tagger, arts, 32, "file")
    res["batch32_sorted"], ents = tag_all(tagger, arts, 32, "sorted")
    res["batch1"], _ = throughput(tagger, arts, 1, "file")
    res["peak_rss_mib"] = round(peak_rss_mib(), 1)  # fp32 only: measured before the bf16 run
    write_preds(preds, records, ents)
    tagger.bf16 = True
    res["batch32_sorted_bf16"], _ = throughput(tagger, arts, 32, "sorted")
    write_json(out, res)


def cmd_scale(model, out, files):
    tagger = Tagger(model)
    res = {}
    for path in files:
        arts = [encode(tagger.tok, r["text"], tagger.window) for r in read_jsonl(path)]
        res[os.path.basename(path)], _ = throughput(tagger, arts, 32, "sorted")
    res["peak_rss_mib"] = round(peak_rss_mib(), 1)
    write_json(out, res)


def read_conll_sentences(path):
    sents, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if words:
                    sents.append((words, tags))
                words, tags = [], []
                continue
            words.append(cols[0])
            tags.append(cols[-1])
    if words:
        sents.append((words, tags))
    return sents


def cmd_train(base, conll, out, steps, batch):
    steps, batch = int(steps), int(batch)
    torch.manual_seed(42)
    random.seed(42)
    sents = read_conll_sentences(conll)
    labels = sorted({t for _, tags in sents for t in tags})
    label_id = {t: i for i, t in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(base)
    model = BertForTokenClassification.from_pretrained(base, num_labels=len(labels),
                                                       dtype=torch.float32)
    model.to(DEVICE).train()
    examples = []
    for words, tags in sents:
        enc = tok(words, is_split_into_words=True, truncation=True, max_length=128)
        lab, prev = [], None
        for w in enc.word_ids():
            lab.append(label_id[tags[w]] if w is not None and w != prev else -100)
            prev = w
        examples.append((enc["input_ids"], lab))
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(d in n for d in no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(d in n for d in no_decay)],
         "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=5e-5)
    sched = transformers.get_linear_schedule_with_warmup(opt, steps // 10, steps)
    order = list(range(len(examples)))
    random.shuffle(order)
    tokens, slots, t = 0, 0, time.perf_counter()
    for step in range(steps):
        chunk = [examples[order[(step * batch + i) % len(order)]] for i in range(batch)]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.zeros((batch, width), dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        lab = torch.full((batch, width), -100, dtype=torch.long)
        for i, (x, y) in enumerate(chunk):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
            lab[i, :len(y)] = torch.tensor(y)
        loss = model(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE),
                     labels=lab.to(DEVICE)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        tokens += int(mask.sum())
        slots += batch * width
    last_loss = loss.item()  # waits for the device
    secs = time.perf_counter() - t
    write_json(out, {"device": str(DEVICE), "peak_device_mib": peak_device_mib(), "steps": steps, "batch": batch, "seconds": round(secs, 2),
                     "real_tokens": tokens, "tokens_per_s": round(tokens / secs, 1),
                     "real_share_of_slots": round(tokens / slots, 3),
                     "last_loss": round(last_loss, 4), "peak_rss_mib": round(peak_rss_mib(), 1)})


def cmd_matmul(out):
    res = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(4096, 384, dtype=dtype)
        b = torch.randn(384, 1536, dtype=dtype)
        for _ in range(3):
            a @ b
        n, t = 20, time.perf_counter()
        for _ in range(n):
            a @ b
        res[name] = round(2 * 4096 * 384 * 1536 * n / (time.perf_counter() - t) / 1e9, 1)
    res["torch"] = torch.__version__
    res["transformers"] = transformers.__version__
    res["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    write_json(out, res)


def span_set(record):
    return [(e["start"], e["end"], e["label"]) for e in record.get("entities", [])]


def peak_device_mib():
    """Peak memory the CUDA caching allocator held since the last reset (None on CPU)."""
    if DEVICE.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(DEVICE) / 2**20, 1)


def cmd_batches(model, texts, out, *batches):
    tagger = Tagger(model)
    arts = [encode(tagger.tok, r["text"], tagger.window) for r in read_jsonl(texts)]
    res = {"device": str(DEVICE), "torch": torch.__version__,
           "transformers": transformers.__version__, "articles": len(arts)}
    for bf16 in (False, True):
        tagger.bf16 = bf16
        for batch in batches:
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(DEVICE)
            fig, _ = throughput(tagger, arts, int(batch), "sorted")
            fig["peak_device_mib"] = peak_device_mib()
            res[f"batch{batch}_{'bf16' if bf16 else 'fp32'}"] = fig
    write_json(out, res)


def cmd_compare(ours, theirs, out):
    a = {r["id"]: r for r in read_jsonl(ours)}
    b = {r["id"]: r for r in read_jsonl(theirs)}
    differ = sorted(k for k in b if k not in a or span_set(a[k]) != span_set(b[k]))
    score_diff = 0.0
    for k in b:
        if k in a and k not in differ:
            for x, y in zip(a[k]["entities"], b[k]["entities"]):
                score_diff = max(score_diff, abs(x["score"] - y["score"]))
    res = {"articles": len(b), "same_entities": len(b) - len(differ),
           "entities": sum(len(r["entities"]) for r in b.values()),
           "max_score_difference": score_diff, "differing_ids": differ[:20]}
    write_json(out, res)
    if differ:
        print(f"predictions differ in {len(differ)} article(s), e.g. {differ[:5]}", file=sys.stderr)
        sys.exit(1)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
    print(json.dumps(obj))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count())))
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "infer":
        cmd_infer(*args)
    elif cmd == "scale":
        cmd_scale(args[0], args[1], args[2:])
    elif cmd == "train":
        cmd_train(*args)
    elif cmd == "matmul":
        cmd_matmul(*args)
    elif cmd == "compare":
        cmd_compare(*args)
    elif cmd == "batches":
        cmd_batches(*args)
    elif cmd == "f1":
        cmd_f1(*args)
    else:
        sys.exit(__doc__)
