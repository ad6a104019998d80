"""Interoperability check of `vpt export` with the tools the field uses (run by
tests/tests/export.rs inside `make test`; needs `scripts/setup.sh interop`).

Reads a reference written by the Rust test (vpt's own next-token logits on a fixed prompt, the
expected GGUF tensor directory and metadata, a run directory) and checks, independently of vpt:
  * transformers' AutoTokenizer / AutoModelForCausalLM load the HF export; the prompt encodes to
    vpt's ids, the chat template renders vpt's prompt, and next-token logits match vpt's
    (max abs diff <= 1e-3);
  * the `gguf` package's reader reads each GGUF export: tensor names, shapes and types,
    metadata; its F32 Q/K matrices are the HF ones under llama.cpp's converter permutation;
  * tensorboard's event-file reader reads the run's event files (CRC-checked) and finds every
    scalar of metrics.jsonl.
Prints one JSON line of figures; exits non-zero with a message on the first failure.
"""
import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch


def fail(msg):
    print(f"check_export.py: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def permute(w, n_head, n_head_kv):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def check_hf(ref, figures):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = ref["hf_dir"]
    tok = AutoTokenizer.from_pretrained(d)
    ids = tok(ref["prompt"], add_special_tokens=False)["input_ids"]
    if ids != ref["ids"]:
        fail(f"transformers encodes the prompt to {ids}, vpt to {ref['ids']}")
    chat = tok.apply_chat_template([{"role": "user", "content": ref["chat_user"]}],
                                   tokenize=False, add_generation_prompt=True)
    if chat != ref["chat_prompt"]:
        fail(f"chat template renders {chat!r}, vpt writes {ref['chat_prompt']!r}")
    if tok.eos_token != ref["eos_token"]:
        fail(f"eos_token is {tok.eos_token!r}, vpt's is {ref['eos_token']!r}")
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ref["ids"]])).logits[0, -1].double().numpy()
    want = np.array(ref["logits"], dtype=np.float64)
    diff = float(np.abs(logits - want).max())
    figures["hf_f32_max_abs_diff"] = diff
    if not diff <= 1e-3:
        fail(f"transformers' next-token logits differ from vpt's by {diff} (> 1e-3)")
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def check_gguf(ref, hf_weights, figures):
    from gguf import GGUFReader

    for g in ref["gguf"]:
        r = GGUFReader(g["path"])
        got = {t.name: ([int(x) for x in reversed(t.shape)], t.tensor_type.name) for t in r.tensors}
        want = {n: (s, ty) for n, (s, ty) in g["tensors"].items()}
        if got != want:
            missing = sorted(set(want) - set(got))[:3]
            extra = sorted(set(got) - set(want))[:3]
            odd = [n for n in want if n in got and got[n] != want[n]][:3]
            fail(f"{g['path']}: tensor directory differs (missing {missing}, extra {extra}, "
                 f"differing {[(n, got[n], want[n]) for n in odd]})")
        for k, v in g["metadata"].items():
            if k not in r.fields:
                fail(f"{g['path']}: metadata `{k}` is missing")
            c = r.fields[k].contents()
            if isinstance(v, dict):  # arrays: length and first items
                if len(c) != v["len"] or c[: len(v["head"])] != v["head"]:
                    fail(f"{g['path']}: metadata `{k}` is {len(c)} items {c[:5]}, want {v}")
            elif isinstance(v, float):
                if not math.isclose(c, v, rel_tol=1e-6):
                    fail(f"{g['path']}: metadata `{k}` = {c}, want {v}")
            elif c != v:
                fail(f"{g['path']}: metadata `{k}` = {c!r}, want {v!r}")
        if g["dtype"] == "f32" and hf_weights is not None:
            tensors = {t.name: t for t in r.tensors}
            n_head, n_kv = ref["num_heads"], ref["num_kv_heads"]
            worst = 0.0
            for layer in ref["check_layers"]:
                for proj, heads in (("q", n_head), ("k", n_kv)):
                    hf = hf_weights[f"model.layers.{layer}.self_attn.{proj}_proj.weight"]
                    gg = np.asarray(tensors[f"blk.{layer}.attn_{proj}.weight"].data)
                    expect = permute(hf, n_head, heads if proj == "k" else n_head)
                    worst = max(worst, float(np.abs(gg.reshape(expect.shape) - expect).max()))
            figures["gguf_f32_qk_permutation_max_abs_diff"] = worst
            if worst != 0.0:
                fail(f"{g['path']}: Q/K are not the HF weights under llama.cpp's permutation "
                     f"(max abs diff {worst})")


def check_events(ref, figures):
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    run = ref["run_dir"]
    files = sorted(glob.glob(os.path.join(run, "events.out.tfevents.*")))
    if not files:
        fail(f"{run}: no TensorBoard event file")
    # The legacy loader yields the events as written (simple_value scalars); it stops at the first
    # record whose CRC does not match, which the counts below would catch.
    seen = {}
    summaries = 0
    for f in files:
        for ev in LegacyEventFileLoader(f).Load():
            summaries += bool(ev.summary.value)
            for v in ev.summary.value:
                seen[(v.tag, ev.step)] = v.simple_value
    n = 0
    with open(os.path.join(run, "metrics.jsonl")) as fh:
        lines = fh.readlines()
    if summaries != len(lines):
        fail(f"{run}: {summaries} summary events for {len(lines)} metrics.jsonl records")
    for line in lines:
        rec = json.loads(line)
        kind, step = rec["kind"], rec["step"]
        flat = {}
        for k, v in rec.items():
            if k in ("kind", "step"):
                continue
            if k == "meta" and isinstance(v, dict):
                flat.update({f"meta/{a}": b for a, b in v.items()})
            elif k == "metrics":
                # an evaluation's metrics under eval/, a learner step's (task and designer
                # step metrics) under train/metrics/
                section = "eval" if kind == "eval" else f"{kind}/metrics"
                flat.update({f"{section}/{a}": b for a, b in v.items()})
            elif v is not None and not isinstance(v, (dict, list)):
                flat[f"{kind}/{k}"] = v
        for tag, v in flat.items():
            if (tag, step) not in seen:
                fail(f"{run}: TensorBoard has no scalar `{tag}` at step {step}")
            got = seen[(tag, step)]
            want = float("nan") if v is None else float(v)
            if not (math.isnan(want) and math.isnan(got)) and not math.isclose(
                    got, want, rel_tol=1e-6, abs_tol=1e-6):
                fail(f"{run}: `{tag}` at step {step} is {got} in TensorBoard, {want} in metrics.jsonl")
            n += 1
    figures["tensorboard_scalars_checked"] = n


def main():
    started = time.time()
    with open(sys.argv[1]) as fh:
        ref = json.load(fh)
    figures = {}
    hf_weights = check_hf(ref, figures)
    check_gguf(ref, hf_weights, figures)
    check_events(ref, figures)
    figures["python_seconds"] = round(time.time() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
