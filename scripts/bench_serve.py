#!/usr/bin/env python3
"""The Python side of scripts/bench-serve.sh.

Subcommands:
  requests CONLL_DIR FALLBACK.jsonl OUT_DIR
      one request body per line (bodies.txt, for oha -Z) and the same articles as tag input
      (sentences.jsonl): the CoNLL-2003 test sentences when CONLL_DIR exists, else the sentences
      of FALLBACK's texts
  server MODEL PORT THREADS
      the server a Python user would write: FastAPI + uvicorn around transformers'
      token-classification pipeline on the same weights, answering POST /v1/tag
  rss PID OUT.jsonl SECONDS
      samples the resident memory of PID once a second (for the soak run)
  report OUT_DIR BENCHMARKS.md
      writes the table between the bench-serve.sh markers
"""

import json
import os
import platform
import re
import sys
import time

from doc_section import cpu_isa, write_cpu_section


def requests(conll_dir, fallback, out):
    texts = []
    test = os.path.join(conll_dir, "test.conll")
    if os.path.exists(test):
        words = []
        with open(test, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("-DOCSTART-"):
                    continue
                if not line:
                    if words:
                        texts.append(" ".join(words))
                    words = []
                    continue
                words.append(line.split(" ")[0])
        if words:
            texts.append(" ".join(words))
        source = "CoNLL-2003 test sentences"
    else:
        with open(fallback, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    text = json.loads(line)["text"]
                    texts.extend(s.strip() + "." for s in text.split(". ") if s.strip())
        source = f"sentences of {fallback}"
    with open(os.path.join(out, "bodies.txt"), "w", encoding="utf-8") as b, \
            open(os.path.join(out, "sentences.jsonl"), "w", encoding="utf-8") as s:
        for i, t in enumerate(texts):
            article = {"id": f"s{i}", "text": t}
            b.write(json.dumps(article) + "\n")
            s.write(json.dumps(article) + "\n")
    with open(os.path.join(out, "requests.json"), "w", encoding="utf-8") as f:
        json.dump({"source": source, "count": len(texts)}, f)


def server(model, port, threads):
    import torch
    import uvicorn
    from fastapi import Body, FastAPI
    from transformers import pipeline

    torch.set_num_threads(int(threads))
    tagger = pipeline("token-classification", model=model, aggregation_strategy="simple",
                      device="cpu")
    app = FastAPI()

    @app.post("/v1/tag")
    def tag(body: dict = Body(...)):
        articles = body.get("articles", [body])
        out = []
        for entities, a in zip(tagger([a["text"] for a in articles]), articles):
            out.append({"id": a.get("id"), "entities": [
                {"start": e["start"], "end": e["end"], "label": e["entity_group"],
                 "text": e["word"], "score": float(e["score"])} for e in entities]})
        return out[0] if "articles" not in body else {"records": out}

    @app.get("/health")
    def health():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")


def rss(pid, out, seconds):
    with open(out, "w", encoding="utf-8") as f:
        for t in range(int(seconds)):
            try:
                with open(f"/proc/{pid}/status", encoding="utf-8") as s:
                    kb = int(re.search(r"VmRSS:\s+(\d+)", s.read()).group(1))
            except (OSError, AttributeError):
                break
            f.write(json.dumps({"t": t, "rss_mib": kb / 1024}) + "\n")
            f.flush()
            time.sleep(1)


def machine():
    name, has, _ = cpu_isa()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{name}, {os.cpu_count()} cores ({', '.join(has)}), {mem:.0f} GiB, {platform.system()}"


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def oha_row(name, c, res, tokens_per_request, rss_mib):
    if res is None:
        return f"| {name} | {c} | not run | | | | | |"
    s = res["summary"]
    rps = s["requestsPerSec"]
    lat = res.get("latencyPercentiles", {})
    codes = res.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    total = sum(codes.values()) or 1
    p50 = lat.get("p50")
    p99 = lat.get("p99")
    ms = lambda v: "—" if v is None else f"{v * 1000:.1f}"
    return (f"| {name} | {c} | {rps:.1f} | {rps * tokens_per_request:,.0f} | {ms(p50)} | {ms(p99)} | "
            f"{rss_mib} | {ok}/{total} |")


def report(out, md):
    meta = load(os.path.join(out, "meta.json")) or {}
    reqs = load(os.path.join(out, "requests.json")) or {}
    tpr = meta.get("tokens_per_request", 0)
    rows = []
    for name, prefix in (("newstag serve", "ns"), ("Python (FastAPI + pipeline)", "py")):
        for c in (1, 8, 64):
            res = load(os.path.join(out, f"{prefix}-c{c}.json"))
            rss_mib = meta.get(f"{prefix}_rss_mib", {}).get(str(c), "—")
            rows.append(oha_row(name, c, res, tpr, rss_mib))
    ratio = []
    for c in (1, 8, 64):
        a, b = load(os.path.join(out, f"ns-c{c}.json")), load(os.path.join(out, f"py-c{c}.json"))
        if a and b:
            ratio.append(f"{c}: {a['summary']['requestsPerSec'] / b['summary']['requestsPerSec']:.1f}x")
    serve_vs_tag = ""
    pairs = []
    for tag_tps, name in meta.get("pairs", []):
        res = load(os.path.join(out, name))
        if res and tag_tps:
            tps = res["summary"]["requestsPerSec"] * tpr
            pairs.append((tps / tag_tps, tps, tag_tps))
    if pairs:
        ratio_mid = sorted(r for r, _, _ in pairs)[len(pairs) // 2]
        each = "; ".join(f"{tps:,.0f} against {tag:,.0f} ({r:.2f})" for r, tps, tag in pairs)
        serve_vs_tag = (
            f"serve at 64 clients against `newstag tag` on the same articles, each pair run one after "
            f"the other: median {ratio_mid:.2f} of tag's tokens/s (tokens/s serve against tag: {each})")
    soak = meta.get("soak")
    lines = [
        "",
        f"Run on {time.strftime('%Y-%m-%d')} by `scripts/bench-serve.sh` (model `{meta.get('model')}`, "
        f"{meta.get('threads')} compute threads on each side). Machine: {machine()}. "
        f"Load average before the run: {meta.get('load_before', '?')}. "
        f"Requests: {reqs.get('source', '?')} ({reqs.get('count', '?')}), one article each, "
        f"{tpr:.1f} sub-tokens on average; load generator `oha` on the same machine (it takes CPU "
        "from the server). newstag serve: `--max-batch-tokens 4096 --max-wait-ms 5`, defaults otherwise; "
        f"precision {meta.get('precision') or '?'} for serve and tag alike.",
        "",
        "| server | clients | requests/s | tokens/s | p50 ms | p99 ms | peak RSS MiB | 200 / sent |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"- newstag serve / Python requests/s by clients: {', '.join(ratio) or 'not measured'}.",
        f"- Batching: {serve_vs_tag or 'not measured'}.",
    ]
    if soak:
        lines.append(
            f"- Memory over {soak['requests']:,} requests at 64 clients: RSS {soak['rss_first']:.0f} MiB "
            f"after the first 10 s, {soak['rss_max']:.0f} MiB at most, {soak['rss_last']:.0f} MiB at the end "
            f"({soak['rps']:.0f} requests/s, {soak['ok']:,} answered 200).")
    lines += [
        "",
        "The model was fine-tuned briefly (`newstag train --max-steps 40`) when none was given: the speed "
        "does not depend on how well a model is trained, only on its shape (MiniLM-L6, 384 hidden).",
        "",
    ]
    write_cpu_section(md, "bench-serve.sh", "\n".join(lines) + "\n",
                      "## HTTP service under load (issue 13)")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"requests": requests, "server": server, "rss": rss, "report": report}[cmd](*args)
