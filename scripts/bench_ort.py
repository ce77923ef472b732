#!/usr/bin/env python3
"""The ONNX Runtime side of scripts/bench.sh: the same fine-tuned weights as bench_torch.py,
exported to ONNX, run on the same windows and batches, scored the same way.

Subcommands:
  export MODEL DIR
      write DIR/model.onnx (torch.onnx.export of the run directory as a
      BertForTokenClassification, dynamic batch and sequence axes), DIR/model-opt.onnx (ONNX
      Runtime's transformer optimizer, model_type bert: fused attention, LayerNorm, GELU),
      DIR/model-int8.onnx (quantize_dynamic of the optimised model with its defaults: int8
      weights per tensor, activations quantised per tensor at run time),
      DIR/model-int8-per-channel.onnx (the same with per_channel=True) and DIR/source.json (what
      they were made from). Skipped when every file is there, newer than the model's weights and
      config, and made from the same run directory with the same onnxruntime and torch.
  infer MODEL DIR VARIANT TEXTS CONLL OUT.json PREDS.jsonl
      VARIANT: fp32 (model-opt.onnx), int8 or int8-per-channel. Tag TEXTS as bench_torch.py infer
      does (batch 32 sorted by length, batch 1 in file order; timings cover building the padded
      batch, the run and the logits), write the entities of the batch-32 run to PREDS (newstag's
      `tag` format, for bench_torch.py compare) and the entity F1 on CONLL (bench_torch.py f1's
      scoring) with the timings to OUT. No peak memory: this process holds torch too (imported
      for the shared loading code), so its RSS would not be ONNX Runtime's.

THREADS (environment): the session's intra_op_num_threads (default: all cores); inter-op 1.
"""

import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch

from bench_torch import (IMPORT_S, RunDirectory, conll_f1, padded, read_conll_sentences, read_jsonl,
                         tag_all, throughput, write_json, write_preds)
from newstag_ref import encode

VARIANTS = {"fp32": "model-opt.onnx", "int8": "model-int8.onnx",
            "int8-per-channel": "model-int8-per-channel.onnx"}
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def threads():
    return int(os.environ.get("THREADS", os.cpu_count()))


def source_of(model_dir):
    """What the cached files depend on; a cache made from anything else is rebuilt."""
    return {"model": os.path.realpath(model_dir), "onnxruntime": ort.__version__,
            "torch": torch.__version__}


def is_fresh(model_dir, out_dir):
    files = [os.path.join(out_dir, f) for f in ["model.onnx", *VARIANTS.values()]]
    meta = os.path.join(out_dir, "source.json")
    if not all(os.path.exists(f) for f in files + [meta]):
        return False
    with open(meta, encoding="utf-8") as f:
        made = json.load(f)
    if any(made.get(k) != v for k, v in source_of(model_dir).items()):
        return False
    newest_input = max(os.path.getmtime(os.path.join(model_dir, f))
                       for f in ("model.safetensors", "config.json"))
    return min(os.path.getmtime(f) for f in files + [meta]) > newest_input


def cmd_export(model_dir, out_dir):
    if is_fresh(model_dir, out_dir):
        print(f"{out_dir}: ONNX files up to date for {model_dir}", file=sys.stderr)
        return
    from onnxruntime.quantization import quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import BertForTokenClassification

    torch.set_num_threads(threads())
    os.makedirs(out_dir, exist_ok=True)
    t = time.perf_counter()
    # Eager attention: the graph ORT's BERT fusions recognise (SDPA exports a different pattern).
    model = BertForTokenClassification.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    model.config.return_dict = False
    ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 7592, 1010, 2088, 999, 102]])
    mask = (ids != 0).long()
    plain = os.path.join(out_dir, "model.onnx")
    with torch.inference_mode():
        torch.onnx.export(model, (ids, mask, torch.zeros_like(ids)), plain, dynamo=False,
                          input_names=INPUTS, output_names=["logits"], opset_version=17,
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in INPUTS + ["logits"]})
    cfg = model.config
    opt = optimize_model(plain, model_type="bert", num_heads=cfg.num_attention_heads,
                         hidden_size=cfg.hidden_size)
    fusions = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    opt.save_model_to_file(os.path.join(out_dir, VARIANTS["fp32"]))
    # The fused contrib ops leave some outputs without an inferred type; they are all fp32.
    types = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    for variant, per_channel in (("int8", False), ("int8-per-channel", True)):
        quantize_dynamic(os.path.join(out_dir, VARIANTS["fp32"]), os.path.join(out_dir, VARIANTS[variant]),
                         per_channel=per_channel, extra_options=types)
    meta = {**source_of(model_dir), "onnx": onnx.__version__, "opset": 17,
            "fusions": fusions, "seconds": round(time.perf_counter() - t, 1),
            "quantize_dynamic": {"int8": {"per_channel": False, "weight_type": "QInt8"},
                                 "int8-per-channel": {"per_channel": True, "weight_type": "QInt8"}}}
    write_json(os.path.join(out_dir, "source.json"), meta)


class OrtTagger(RunDirectory):
    """A newstag run directory's ONNX export driven through an ONNX Runtime CPU session."""

    def __init__(self, model_dir, onnx_path):
        super().__init__(model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t = time.perf_counter()
        self.session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        self.load_s = time.perf_counter() - t
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, rows):
        """Logits of each row (padded batch, session run), timed like bench_torch's Tagger.run."""
        t = time.perf_counter()
        ids, mask = padded(rows)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:  # the optimizer keeps it; zeros, as torch's default
            feed["token_type_ids"] = np.zeros_like(ids)
        logits = self.session.run(["logits"], feed)[0]
        return logits, time.perf_counter() - t, int(mask.sum())


def cmd_infer(model_dir, onnx_dir, variant, texts, conll, out, preds):
    if variant not in VARIANTS:
        sys.exit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
    with open(os.path.join(onnx_dir, "source.json"), encoding="utf-8") as f:
        made = json.load(f)
    if made["model"] != os.path.realpath(model_dir):
        sys.exit(f"{onnx_dir} was exported from {made['model']}, not {model_dir}: run export")
    tagger = OrtTagger(model_dir, os.path.join(onnx_dir, VARIANTS[variant]))
    records = read_jsonl(texts)
    arts = [encode(tagger.tok, r["text"], tagger.window) for r in records]
    res = {"variant": variant, "onnx": VARIANTS[variant], "onnxruntime": ort.__version__,
           "quantize_dynamic": made["quantize_dynamic"].get(variant), "fusions": made["fusions"],
           "threads": threads(), "import_s": round(IMPORT_S, 3), "load_s": round(tagger.load_s, 3),
           "articles": len(arts)}
    res["batch32_sorted"], ents = tag_all(tagger, arts, 32, "sorted")
    res["batch1"], _ = throughput(tagger, arts, 1, "file")
    write_preds(preds, records, ents)
    res["f1"] = conll_f1(tagger, read_conll_sentences(conll))
    write_json(out, res)


if __name__ == "__main__":
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "export" and len(args) == 2:
        cmd_export(*args)
    elif cmd == "infer" and len(args) == 7:
        cmd_infer(*args)
    else:
        sys.exit(__doc__)
