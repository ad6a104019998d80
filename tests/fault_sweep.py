#!/usr/bin/env python3
"""A sweep of fault cases against a built `vpt` (bad configs, bad data, kills, full disk, bad
plugin files, crafted checkpoints, concurrent runs; run directories: symlinks planted in a
run directory or an export target, SIGHUP, crafted checkpoints re-signed with absurd values,
export targets, the keep policy, budgets given on resume; absurd sizes, closed pipes, FIFOs,
byte-order marks, plugins for another architecture, silently accepted values). Each case is
classified as ok / clear error / unclear / crash / hang / data loss / silent; the counts are
printed at the end. Not part of `make test` (it takes minutes and mounts a tmpfs when root).

    python3 tests/fault_sweep.py [target/release] [scratch-dir]
"""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REL = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "target/release").resolve()
VPT = str(REL / "vpt")
TINY_SO = REL / "libvpt_tiny.so"
TINY = str(REPO / "examples/tiny.toml")
ROOT = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/vpt-fault-sweep").resolve()
shutil.rmtree(ROOT, ignore_errors=True)
ROOT.mkdir(parents=True)
os.chdir(ROOT)
random.seed(14)
tally = Counter()
rows = []


def run(args, timeout=120, env=None, cwd=None):
    e = dict(os.environ, **(env or {}))
    e.pop("RANK", None)
    e.pop("WORLD_SIZE", None)
    try:
        p = subprocess.run([VPT, *args], capture_output=True, timeout=timeout, env=e, cwd=cwd)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return None, "", ""


def record(cls, name, outcome, detail=""):
    tally[outcome] += 1
    rows.append((cls, name, outcome, detail))
    print(f"{cls:12} {outcome:12} {name}  {detail[:150]}", flush=True)


def judge(rc, err, want_ok):
    if rc is None:
        return "hang"
    if rc < 0 or rc in (134, 139):
        return "crash"
    if rc == 0:
        return "ok" if want_ok else "silent"
    if want_ok:
        return "unclear"
    lines = [l for l in err.strip().splitlines() if l.strip()]
    return "clear error" if 1 <= len(lines) <= 6 and len(err) < 4000 else "unclear"


def case(cls, name, args, want_ok=False, **kw):
    rc, out, err = run(args, **kw)
    outcome = judge(rc, err, want_ok)
    record(cls, name, outcome, (err.strip().splitlines() or [""])[-1])
    return rc, out, err


def tiny(out, *sets, extra=()):
    a = ["--plugin", str(TINY_SO), "run", TINY, "--out", str(out), *extra]
    for s in sets:
        a += ["--set", s]
    return a


def metrics_ok(d):
    p = Path(d) / "metrics.jsonl"
    if not p.exists():
        return True
    for l in p.read_text().splitlines():
        try:
            json.loads(l)
        except ValueError:
            return False
    return True


# ---- A. bad configs ---------------------------------------------------------------------------
bad_sets = [
    "run.steps=0", "run.steps=-3", "run.wall_clock=-1", "learner.lr=nan", "learner.lr=inf",
    "learner.lr=-1", "learner.betas=[2.0,0.9]", "learner.min_lr_ratio=2", "meta.period=0",
    "meta.lambda=nan", "meta.estimator=\"bogus\"", "run.device=\"gpu\"", "run.device=\"cuda:9\"",
    "task.name=\"bogus\"", "task.plugin=\"bogus\"", "task.config.batch_size=-1",
    "task.config.hidden=0", "task.config.dim=0", "task.config.feedback_batch_size=0",
    "task.config.unknown=1", "run.nonsense=1", "run.steps=\"many\"", "designer.name=\"bogus\"",
    "task.config.alignment=\"some\"", "designer.config.alpha_max=7",
    "task.config.model=\"${VPT_SURELY_UNSET}\"", "run.device=\"${VPT_SELF}\"",
]
for i, s in enumerate(bad_sets):
    case("config", s, tiny(ROOT / f"a{i}", s), env={"VPT_SELF": "${VPT_SELF}y"})
case("config", "missing file", ["run", "nope.toml", "--out", "a-m"])
Path("bad.toml").write_text("[run\nsteps=")
case("config", "not TOML", ["--plugin", str(TINY_SO), "run", "bad.toml", "--out", "a-t"])
Path("huge.toml").write_text(Path(TINY).read_text().replace('name = "tiny"', 'name = "' + "n" * (10 << 20) + '"', 1))
case("config", "10 MB task name", ["--plugin", str(TINY_SO), "run", "huge.toml", "--out", "a-h"])
case("config", "malformed --set", tiny("a-s", "noequals"))

# ---- B. bad data (LM, tiny_random model) -----------------------------------------------------
LM = """[run]
steps = 2
checkpoint_every = 1
eval_limit = 2
[task]
plugin = "lm"
name = "causal_lm"
[task.config]
model = "tiny_random"
seq_len = 16
batch_size = 2
feedback_batch_size = 2
feedback_max_len = 64
[task.config.unlabeled]
generated_math = false
jsonl = ["DATA"]
general_fraction = 0.0
[task.config.eval]
general_rows = 0
max_new_tokens = 4
"""
data_cases = {
    "not JSON": b'{"text": "a"}\n{"text": \n',
    "not an object": b'["a"]\n',
    "wrong field type": b'{"text": 3}\n',
    "non-UTF-8": b'{"text": "ok"}\n{"text": "\xff\xfe"}\n',
    "empty file": b"",
    "blank lines only": b"\n\n  \n",
    "both text and prompt": b'{"text": "a", "prompt": "b", "response": "c"}\n',
}
for name, data in data_cases.items():
    f = ROOT / f"d-{len(rows)}.jsonl"
    f.write_bytes(data)
    cfg = ROOT / f"lm-{len(rows)}.toml"
    cfg.write_text(LM.replace("DATA", str(f)))
    case("data", name, ["run", str(cfg), "--out", str(ROOT / f"b{len(rows)}")])
cfg = ROOT / "lm-missing.toml"
cfg.write_text(LM.replace("DATA", "/nonexistent.jsonl"))
case("data", "missing file", ["run", str(cfg), "--out", "b-missing"])
big = ROOT / "big.jsonl"
big.write_text(json.dumps({"text": "word " * 10_000_000}) + "\n" + json.dumps({"text": "x"}) + "\n")
cfg = ROOT / "lm-big.toml"
cfg.write_text(LM.replace("DATA", str(big)))
t = subprocess.run(["/usr/bin/time", "-f", "%M", VPT, "run", str(cfg), "--out", "b-big"],
                   capture_output=True, timeout=600)
peak_mb = int(t.stderr.decode().strip().splitlines()[-1]) / 1024
state = max((p.stat().st_size for p in Path("b-big/checkpoints").glob("*/state.json")), default=0)
ok = t.returncode == 0 and peak_mb < 2048 and state < 20e6
record("data", "50 MB line", "ok" if ok else "unclear", f"peak {peak_mb:.0f} MB, state.json {state/1e6:.1f} MB")
crlf = ROOT / "crlf.jsonl"
crlf.write_bytes(b'{"text": "a b c"}\r\n{"text": "d e"}\r\n')
cfg = ROOT / "lm-crlf.toml"
cfg.write_text(LM.replace("DATA", str(crlf)))
case("data", "CRLF lines", ["run", str(cfg), "--out", "b-crlf"], want_ok=True)

# ---- C. kills -------------------------------------------------------------------------------
def spawn(out, *sets):
    return subprocess.Popen([VPT, *tiny(out, "run.steps=1000000", *sets)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_lines(d, n=3, limit=60):
    t0 = time.time()
    while time.time() - t0 < limit:
        p = Path(d) / "metrics.jsonl"
        if p.exists() and len(p.read_text().splitlines()) >= n:
            return True
        time.sleep(0.05)
    return False


for i in range(10):
    d = ROOT / f"k{i}"
    p = spawn(d, "run.checkpoint_every=1", "run.keep_checkpoints=2")
    wait_lines(d, 1)
    time.sleep(random.uniform(0.0, 1.5))
    p.kill()
    p.wait()
    rc, _, err = run(["--plugin", str(TINY_SO), "run", "--resume", str(d), "--set", "run.steps=1"])
    if rc == 0 or "already finished" in err:
        outcome = "ok" if metrics_ok(d) else "data loss"
    elif "no checkpoint found" in err:
        outcome = "ok"  # killed before the first checkpoint
    else:
        outcome = "data loss"
    record("kill", f"SIGKILL #{i} then resume", outcome, err.strip().splitlines()[-1] if err.strip() else "")
for i, sig in enumerate([signal.SIGTERM, signal.SIGINT, signal.SIGTERM]):
    d = ROOT / f"s{i}"
    p = spawn(d, "run.checkpoint_every=0")
    wait_lines(d)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    ok = p.returncode == 130 and b"vpt run --resume" in err
    steps = [int(x.name[5:]) for x in (d / "checkpoints").glob("step-*") if x.name[5:].isdigit()]
    rc, _, e2 = run(["--plugin", str(TINY_SO), "run", "--resume", str(d), "--set",
                     f"run.steps={max(steps, default=0) + 2}"])
    ok = ok and rc == 0 and metrics_ok(d)
    record("kill", f"{sig.name} then resume", "ok" if ok else "data loss", err.decode().strip().splitlines()[-1])
for i in range(2):
    d = ROOT / f"ss{i}"
    p = spawn(d, "task.config.batch_size=400000")
    wait_lines(d, 1)
    p.send_signal(signal.SIGINT)
    time.sleep(0.1)  # two presses of Ctrl-C; signals sent back to back coalesce into one
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=5)
        record("kill", f"double SIGINT #{i}", "ok" if p.returncode == 130 else "unclear", f"rc {p.returncode}")
    except subprocess.TimeoutExpired:
        p.kill()
        record("kill", f"double SIGINT #{i}", "hang")

# ---- D. full disk ---------------------------------------------------------------------------
if os.geteuid() == 0:
    for free_k in [8, 12, 16, 24, 32, 48, 64, 96, 128, 256]:
        mnt = ROOT / f"disk{free_k}"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
        try:
            (mnt / "filler").write_bytes(b"\0" * ((1 << 20) - free_k * 1024))
        except OSError:
            pass
        d = mnt / "r"
        rc, _, err = run(tiny(d, "run.steps=20", "run.checkpoint_every=1", "run.keep_checkpoints=3"))
        outcome = judge(rc, err, want_ok=False)
        if outcome == "silent":
            outcome = "ok"  # it fitted
        tmp = list(d.glob("checkpoints/*.tmp"))
        if tmp:
            outcome = "data loss"
        if any(d.glob("checkpoints/step-*")):
            rc2, _, e2 = run(["--plugin", str(TINY_SO), "eval", TINY, "--checkpoint", str(d)])
            if rc2 != 0:
                outcome = "data loss"
        if not metrics_ok(d):
            outcome = "data loss"
        record("full disk", f"{free_k} KiB free", outcome, (err.strip().splitlines() or [""])[-1])
        subprocess.run(["umount", str(mnt)], check=True)
else:
    print("full disk: skipped (needs root to mount a tmpfs)")

# ---- E. bad plugin files --------------------------------------------------------------------
whole = TINY_SO.read_bytes()
bad_files = {f"truncated at {n}": whole[:n] for n in [0, 16, 64, 4096, 65536, 1 << 20, len(whole) // 2, len(whole) - 1]}
bad_files["text file"] = b"hello\n"
bad_files["random bytes"] = bytes(random.getrandbits(8) for _ in range(100000))
bad_files["ELF header only"] = whole[:64]
for name, data in bad_files.items():
    d = ROOT / f"p{len(rows)}"
    d.mkdir()
    (d / "libx.so").write_bytes(data)
    case("plugin file", f"inspect: {name}", ["plugins", "inspect", str(d / "libx.so")])
    case("plugin file", f"run beside: {name}", ["run", TINY, "--set", "run.steps=1", "--out", str(d / "r")],
         want_ok=True, env={"VPT_PLUGIN_PATH": str(d)})
for name, path in [("a system library", "/lib/x86_64-linux-gnu/libanl.so.1"), ("an executable", "/bin/ls"),
                   ("a directory", str(ROOT)), ("wrong SDK fixture", str(REL / "libfixture_wrong_sdk.so")),
                   ("wrong torch fixture", str(REL / "libfixture_wrong_torch.so"))]:
    if Path(path).exists():
        case("plugin file", f"inspect: {name}", ["plugins", "inspect", path])

# ---- F. crafted checkpoints ----------------------------------------------------------------
base = ROOT / "cbase"
run(tiny(base, "run.steps=6", "run.checkpoint_every=3", "run.keep_checkpoints=3"))
_, at3, _ = run(["--plugin", str(TINY_SO), "eval", TINY, "--checkpoint", str(base / "checkpoints/step-000000003")])
_, at6, _ = run(["--plugin", str(TINY_SO), "eval", TINY, "--checkpoint", str(base)])


def sha(b):
    return hashlib.sha256(b).hexdigest()


def crafted(name, mutate, consistent=False):
    """Copies the base run, mutates step 6, optionally re-signs the manifest, and evaluates."""
    d = ROOT / f"c{len(rows)}"
    shutil.copytree(base, d)
    s6 = d / "checkpoints/step-000000006"
    mutate(s6)
    if consistent and (s6 / "manifest.json").exists():
        m = json.loads((s6 / "manifest.json").read_text())
        for f in m["files"]:
            b = (s6 / f).read_bytes()
            m["files"][f] = {"bytes": len(b), "sha256": sha(b)}
        (s6 / "manifest.json").write_text(json.dumps(m))
    rc, out, err = run(["--plugin", str(TINY_SO), "eval", TINY, "--checkpoint", str(d)])
    outcome = judge(rc, err, want_ok=False)
    if rc == 0:
        if "falling back" in err and out == at3:
            outcome = "ok"  # refused and said so; loaded step 3
        elif out == at6:
            outcome = "ok"  # the mutation changed nothing that matters
        elif consistent and "flipped" in name:
            # Re-signed after the edit: a well-formed checkpoint with other values. The
            # checksum is an integrity check, not a signature (docs/trust.md); loading it runs
            # no code, so it is data like any other checkpoint.
            outcome = "ok"
        else:
            outcome = "silent"
    record("checkpoint", name, outcome, (err.strip().splitlines() or [""])[-1])


def flip(off):
    def m(s6):
        p = s6 / "tensors.safetensors"
        b = bytearray(p.read_bytes())
        b[off % len(b)] ^= 0x40
        p.write_bytes(bytes(b))
    return m


for off in [0, 3, 9, 100, 2000, -8, -100, random.randrange(10**6)]:
    crafted(f"flipped byte at {off}", flip(off))
crafted("flipped byte, manifest re-signed", flip(-8), consistent=True)
crafted("truncated tensors", lambda s: (s / "tensors.safetensors").write_bytes((s / "tensors.safetensors").read_bytes()[:1000]))
crafted("truncated tensors, re-signed", lambda s: (s / "tensors.safetensors").write_bytes((s / "tensors.safetensors").read_bytes()[:1000]), True)
crafted("manifest deleted", lambda s: (s / "manifest.json").unlink())
crafted("manifest garbage", lambda s: (s / "manifest.json").write_text("{{{"))
crafted("manifest version 1", lambda s: (s / "manifest.json").write_text((s / "manifest.json").read_text().replace('"version": 2', '"version": 1')))
crafted("state.json garbage, re-signed", lambda s: (s / "state.json").write_text("[1,2"), True)
crafted("counter as string, re-signed", lambda s: (s / "state.json").write_text((s / "state.json").read_text().replace('"meta_steps":', '"meta_steps":"x","_":', 1)), True)
crafted("seconds as string, re-signed", lambda s: (s / "state.json").write_text((s / "state.json").read_text().replace('"seconds":', '"seconds":"x","__":', 1)), True)


def huge_header(s):
    p = s / "tensors.safetensors"
    b = bytearray(p.read_bytes())
    b[0:8] = (1 << 62).to_bytes(8, "little")
    p.write_bytes(bytes(b))


crafted("safetensors header length 2^62, re-signed", huge_header, True)


def retype(s):
    p = s / "tensors.safetensors"
    b = p.read_bytes()
    n = int.from_bytes(b[:8], "little")
    h = json.loads(b[8:8 + n])
    for k, v in h.items():
        if k != "__metadata__":
            v["shape"] = [v["shape"][0] * 1000] + v["shape"][1:] if v["shape"] else [1000]
    hb = json.dumps(h).encode()
    p.write_bytes(len(hb).to_bytes(8, "little") + hb + b[8 + n:])


crafted("tensor shapes inflated, re-signed", retype, True)


def drop_theta(s):
    p = s / "tensors.safetensors"
    b = p.read_bytes()
    n = int.from_bytes(b[:8], "little")
    h = json.loads(b[8:8 + n])
    victim = next(k for k in h if k.startswith("theta/"))
    del h[victim]
    if "__metadata__" in h:
        del h["__metadata__"]
    hb = json.dumps(h).encode()
    p.write_bytes(len(hb).to_bytes(8, "little") + hb + b[8 + n:])


crafted("a theta tensor removed, re-signed", drop_theta, True)


def evil(s):
    for f in s.iterdir():
        f.unlink()
    shutil.copy(REPO / "tests/fixtures/evil-ot/tensors.ot", s / "tensors.ot")
    (s / "state.json").write_text('{"step":6,"state":{}}')


crafted("TorchScript archive with __setstate__", evil)
pwned = list(ROOT.rglob("PWNED-by-checkpoint"))
record("checkpoint", "crafted archive ran no code", "ok" if not pwned else "silent", str(pwned))

# ---- G. concurrent runs ---------------------------------------------------------------------
for i in range(3):
    d = ROOT / f"g{i}"
    ps = [subprocess.Popen([VPT, *tiny(d, "run.steps=200")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
          for _ in range(2)]
    res = [(p.wait(timeout=300), p.stderr.read().decode()) for p in ps]
    codes = sorted(r for r, _ in res)
    ok = codes == [0, 1] and any(("in use by another" in e or "already holds a run" in e) for _, e in res)
    ok = ok and metrics_ok(d)
    record("concurrent", f"two runs on one --out #{i}", "ok" if ok else "data loss", str(codes))
d = ROOT / "g-res"
p = spawn(d)
wait_lines(d)
case("concurrent", "--resume while running", ["--plugin", str(TINY_SO), "run", "--resume", str(d)])
case("concurrent", "--overwrite while running", tiny(d, "run.steps=3", extra=["--overwrite"]))
p.kill()
p.wait()
record("concurrent", "log intact after both", "ok" if metrics_ok(d) else "data loss")

# ---- H. symlinks planted in run directories and export targets ------------------------------
def planted(name, link, setup=None, resume=False):
    """Plants `link` (a name in the run directory) pointing outside, then runs or resumes."""
    d = ROOT / f"h{len(rows)}"
    outside = ROOT / f"h{len(rows)}-outside"
    if resume:
        run(tiny(d, "run.steps=4", "run.checkpoint_every=2", extra=["--halt-after", "2"]))
        p = d / link
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    d.mkdir(parents=True, exist_ok=True)
    (d / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, d / link)
    if resume:
        rc, _, err = run(["--plugin", str(TINY_SO), "run", "--resume", str(d), "--set", "run.steps=6"])
    else:
        rc, _, err = run(tiny(d, "run.steps=2"))
    outcome = judge(rc, err, want_ok=False)
    if outside.exists():
        outcome = "security"
    elif outcome == "clear error" and "symbolic link" not in err:
        outcome = "unclear"
    record("symlink", name, outcome, (err.strip().splitlines() or [""])[-1])


planted("dangling metrics.jsonl, new run", "metrics.jsonl")
planted("dangling metrics.jsonl, resume", "metrics.jsonl", resume=True)
planted("dangling summary.json, resume", "summary.json", resume=True)
planted("dangling .lock, new run", ".lock")
planted("checkpoints/ -> outside, resume", "checkpoints", resume=True)
planted("checkpoints/ -> outside, new run", "checkpoints")
planted("dangling config.json, resume", "config.json", resume=True)

# ---- I. SIGHUP --------------------------------------------------------------------------------
for i in range(2):
    d = ROOT / f"hup{i}"
    p = spawn(d, "run.checkpoint_every=0")
    wait_lines(d)
    p.send_signal(signal.SIGHUP)
    _, err = p.communicate(timeout=60)
    ok = p.returncode == 130 and b"vpt run --resume" in err
    steps = [int(x.name[5:]) for x in (d / "checkpoints").glob("step-*") if x.name[5:].isdigit()]
    rc, _, _ = run(["--plugin", str(TINY_SO), "run", "--resume", str(d), "--set",
                    f"run.steps={max(steps, default=0) + 2}"])
    ok = ok and rc == 0 and metrics_ok(d)
    record("signal", f"SIGHUP #{i} then resume", "ok" if ok else "data loss", f"rc {p.returncode}")
for f in sorted((REPO / "examples").glob("*.toml")):
    text = f.read_text()
    every = [l for l in text.splitlines() if l.strip().startswith("checkpoint_every")]
    n = int(every[0].split("=")[1].split("#")[0]) if every else 0
    record("signal", f"{f.name} checkpoints during the run", "ok" if n > 0 else "data loss", f"checkpoint_every {n}")


# ---- J. crafted checkpoints, re-signed, with absurd values ------------------------------------
def resigned_state(name, edit, args=("--steps", "8"), want=None):
    d = ROOT / f"j{len(rows)}"
    shutil.copytree(base, d)
    (d / "summary.json").unlink(missing_ok=True)
    s6 = d / "checkpoints/step-000000006"
    doc = json.loads((s6 / "state.json").read_text())
    edit(doc)
    (s6 / "state.json").write_text(json.dumps(doc))
    m = json.loads((s6 / "manifest.json").read_text())
    b = (s6 / "state.json").read_bytes()
    m["files"]["state.json"] = {"bytes": len(b), "sha256": sha(b)}
    (s6 / "manifest.json").write_text(json.dumps(m))
    rc, out, err = run(["--plugin", str(TINY_SO), "run", "--resume", str(d), *args], timeout=90)
    outcome = judge(rc, err, want_ok=False)
    if rc == 0 and "falling back" in err:
        outcome = "ok"  # refused and said so; resumed from step 3
    if outcome == "clear error" and want and want not in err:
        outcome = "unclear"
    record("re-signed", name, outcome, (err.strip().splitlines() or [""])[-1])


resigned_state("state.seconds = -1e308, --wall-clock", lambda d: d["state"].update(seconds=-1e308),
               ("--wall-clock", "5"), "state.seconds")
resigned_state("meta_skipped > meta_steps", lambda d: d["state"]["counters"].update(meta_skipped=10**12),
               want="meta_skipped")
resigned_state("learner_skipped > step", lambda d: d["state"]["counters"].update(learner_skipped=99),
               want="learner_skipped")
resigned_state("unlabeled_cursor of the wrong length", lambda d: d["state"]["task"].update(unlabeled_cursor=[]),
               want="unlabeled_cursor")
resigned_state("step 2^63", lambda d: d.update(step=2**63), want="step-000000006")

LM_SO = REL / "libvpt_lm.so"
lm_data = ROOT / "lm-data.jsonl"
lm_data.write_text("".join(json.dumps({"text": f"line {i} " + "word " * 40}) + "\n" for i in range(64)))
lm_cfg = ROOT / "lm-base.toml"
lm_cfg.write_text(LM.replace("DATA", str(lm_data)))
lmbase = ROOT / "lmbase"
lm_rc, _, lm_err = run(["--plugin", str(LM_SO), "run", str(lm_cfg), "--out", str(lmbase)], timeout=300)
if lm_rc == 0:
    d = ROOT / "j-tokens"
    shutil.copytree(lmbase, d)
    (d / "summary.json").unlink(missing_ok=True)
    s2 = d / "checkpoints/step-000000002"
    doc = json.loads((s2 / "state.json").read_text())
    doc["state"]["task"]["buffer"] = {"ids": [10**9, 5], "loss_runs": [0, 2]}
    (s2 / "state.json").write_text(json.dumps(doc))
    m = json.loads((s2 / "manifest.json").read_text())
    b = (s2 / "state.json").read_bytes()
    m["files"]["state.json"] = {"bytes": len(b), "sha256": sha(b)}
    (s2 / "manifest.json").write_text(json.dumps(m))
    rc, _, err = run(["--plugin", str(LM_SO), "run", "--resume", str(d), "--steps", "3"])
    outcome = judge(rc, err, want_ok=False)
    if outcome == "clear error" and "state.task.buffer" not in err:
        outcome = "unclear"
    record("re-signed", "LM token ids out of range", outcome, (err.strip().splitlines() or [""])[-1])
else:
    record("re-signed", "LM base run", "unclear", (lm_err.strip().splitlines() or [""])[-1])

# ---- K. export targets ------------------------------------------------------------------------
def exp(out, *extra, run_dir=None):
    return ["--plugin", str(LM_SO), "export", str(run_dir or lmbase), "--format", "hf", "--out", str(out), *extra]


if lm_rc == 0:
    before = (lmbase / "config.json").read_bytes()
    case("export", "--out RUN", exp(lmbase))
    case("export", "--out RUN/sub", exp(lmbase / "sub"))
    record("export", "run config intact", "ok" if (lmbase / "config.json").read_bytes() == before else "data loss")
    full = ROOT / "k-full"
    full.mkdir()
    (full / "config.json").write_text("mine")
    case("export", "non-empty --out", exp(full))
    record("export", "non-empty --out kept", "ok" if (full / "config.json").read_text() == "mine" else "data loss")
    case("export", "non-empty --out --overwrite", exp(full, "--overwrite"), want_ok=True)
    for link in ["config.json", "model.safetensors"]:
        k = ROOT / f"k-link-{link}"
        k.mkdir()
        victim = ROOT / f"k-victim-{link}"
        victim.write_text("precious")
        os.symlink(victim, k / link)
        for extra in [(), ("--overwrite",)]:
            rc, _, err = run(exp(k, *extra))
            outcome = judge(rc, err, want_ok=False)
            if victim.read_text() != "precious":
                outcome = "security"
            record("export", f"{link} link in --out {' '.join(extra)}", outcome, (err.strip().splitlines() or [""])[-1])
    case("export", "bad --format", exp(ROOT / "k-f")[:-4] + ["--format", "onnx", "--out", str(ROOT / "k-f")])
    case("export", "bad --dtype", ["--plugin", str(LM_SO), "export", str(lmbase), "--format", "gguf",
                                   "--dtype", "f64", "--out", str(ROOT / "k-d")])
    rc, _, err = run(exp(ROOT / "k-a", "--adapter"))
    outcome = judge(rc, err, want_ok=False)
    if (ROOT / "k-a").exists() and any((ROOT / "k-a").iterdir()):
        outcome = "silent"
    record("export", "--adapter without LoRA", outcome, (err.strip().splitlines() or [""])[-1])

# ---- L. keep policy, budgets on resume, finishing twice ----------------------------------------
d = ROOT / "l-keep"
run(tiny(d, "run.steps=30", "run.checkpoint_every=5"))
(d / "summary.json").unlink(missing_ok=True)
t = d / "checkpoints/step-000000030/tensors.safetensors"
b = bytearray(t.read_bytes())
b[-3] ^= 0x10
t.write_bytes(bytes(b))
run(["--plugin", str(TINY_SO), "run", "--resume", str(d), "--set", "run.keep_checkpoints=1", "--steps", "28"])
rc, _, err = run(["--plugin", str(TINY_SO), "run", "--resume", str(d), "--steps", "29"])
record("keep", "keep=1 with the newest corrupt", "ok" if rc == 0 else "data loss", (err.strip().splitlines() or [""])[-1])
d = ROOT / "l-budget"
run(tiny(d, "run.steps=6", "run.checkpoint_every=2", extra=["--halt-after", "2"]))
run(["--plugin", str(TINY_SO), "run", "--resume", str(d), "--steps", "12", "--halt-after", "4"])
rc, out, err = run(["--plugin", str(TINY_SO), "run", "--resume", str(d)])
try:
    steps = json.loads(out)["steps"]
except ValueError:
    steps = None
record("resume", "budget given on --resume is kept", "ok" if steps == 12 else "silent", f"steps {steps}")
d = ROOT / "l-summary"
run(tiny(d, "run.steps=3"))
(d / "summary.json").unlink()
run(["--plugin", str(TINY_SO), "run", "--resume", str(d)])
finals = [l for l in (d / "metrics.jsonl").read_text().splitlines() if '"kind":"eval"' in l and '"step":3,' in l]
record("resume", "killed before summary.json, resumed", "ok" if len(finals) == 1 else "silent", f"{len(finals)} final evaluations")
d = ROOT / "l-events"
run(tiny(d, "run.steps=3"))
run(tiny(d, "run.steps=2", extra=["--overwrite"]))
ev = list(d.glob("events.out.tfevents.*"))
record("resume", "--overwrite removes old event files", "ok" if len(ev) == 1 else "silent", f"{len(ev)} event files")
rc, _, err = run(tiny(ROOT / "l-nan", "run.steps=3", 'task.config.nan_in="pretrain"', "task.config.nan_every=1"))
record("resume", "every learner step skipped", "ok" if rc != 0 or "learner steps were skipped" in err else "silent",
       (err.strip().splitlines() or [""])[-1])

# ---- I. absurd sizes, pipes, special files, unclear inputs ----------------------------------
def case_says(cls, name, args, needles, **kw):
    """A clear error must also name every needle (the field, the file, the reason)."""
    rc, out, err = run(args, **kw)
    outcome = judge(rc, err, want_ok=False)
    if outcome == "clear error" and not all(n in err for n in needles):
        outcome = "unclear"
    record(cls, name, outcome, (err.strip().splitlines() or [""])[-1])


huge = {
    "task.config.hidden=1000000000000": "task.config.hidden",
    "designer.config.hidden=1000000000000": "designer.config.hidden",
    "task.config.batch_size=1000000000000": "task.config.batch_size",
    "task.config.feedback_size=1000000000000": "task.config.feedback_size",
    "task.config.eval_size=1000000000000": "task.config.eval_size",
    "task.config.dim=1000000000": "task.config.dim",
    "task.config.domains=4000000000": "task.config.domains",
}
for s, field in huge.items():
    case_says("huge size", s, tiny(ROOT / f"h{len(rows)}", s), [field], timeout=60)
case_says("huge size", "tiny feedback pool 2^24 x dim 4096",
          tiny(ROOT / "h-pool", "task.config.feedback_size=16777216", "task.config.dim=4096"),
          ["task.config.feedback_size"], timeout=60)
(ROOT / "h.jsonl").write_text('{"text": "a b c"}\n')
lm_h = ROOT / "lm-h.toml"
lm_h.write_text(LM.replace("DATA", str(ROOT / "h.jsonl")))
for s, field in {"task.config.seq_len=1000000000000": "task.config.seq_len",
                 "task.config.batch_size=1000000000000": "task.config.batch_size",
                 "task.config.feedback_max_len=1000000000000": "task.config.feedback_max_len",
                 "task.config.eval.max_new_tokens=1000000000000": "task.config.eval.max_new_tokens",
                 "task.config.top_k=1000000000": "task.config.top_k"}.items():
    case_says("huge size", "lm " + s, ["run", str(lm_h), "--out", str(ROOT / f"h{len(rows)}"), "--set", s],
              [field], timeout=60)
case_says("huge size", "lm batch 4096 x seq 65536",
          ["run", str(lm_h), "--out", "h-lm", "--set", "task.config.seq_len=65536",
           "--set", "task.config.batch_size=4096"], ["task.config.batch_size"], timeout=60)
vis = ROOT / "vision.toml"
vis.write_text('[run]\nsteps = 1\n[task]\nplugin = "vision"\nname = "dino_dense"\n')
for s, field in {"task.config.vit.dim=1000000000": "task.config.vit.dim",
                 "task.config.batch_size=1000000000000": "task.config.batch_size",
                 "task.config.dino.out_dim=1000000000": "task.config.dino.out_dim",
                 "task.config.crops.locals=1000000": "task.config.crops.locals"}.items():
    case_says("huge size", "vision " + s, ["run", str(vis), "--out", str(ROOT / f"h{len(rows)}"), "--set", s],
              [field], timeout=60)
rw = str(REPO / "examples/reweight-tiny.toml")
case_says("huge size", "reweight hidden [1e12]",
          ["run", rw, "--out", "h-rw", "--set", "designer.config.hidden=[1000000000000]"],
          ["designer.config.hidden[0]"], timeout=60)


def closed_stdout(args):
    p = subprocess.Popen([VPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # `| head -0`: the reader is gone before vpt writes
    err = p.stderr.read().decode(errors="replace")
    rc = p.wait(timeout=60)
    outcome = "ok" if rc == 141 and not err.strip() else judge(rc, err, want_ok=False)
    if outcome == "clear error":
        outcome = "unclear"
    record("pipe", " ".join(args) + " | head", outcome, f"rc {rc} {err.strip()[-120:]}")


closed_stdout(["schema", "run"])
closed_stdout(["plugins", "list", "--json"])
closed_stdout(["plugins", "list"])
closed_stdout(["--plugin", str(TINY_SO), "schema", "tiny"])
closed_stdout(["--plugin", str(TINY_SO), "eval", TINY, "--limit", "8"])
fifo = ROOT / "fifo.jsonl"
os.mkfifo(fifo)
lm_f = ROOT / "lm-fifo.toml"
lm_f.write_text(LM.replace("DATA", str(fifo)))
case_says("fifo", "FIFO as JSONL data", ["run", str(lm_f), "--out", "f-data"], ["fifo.jsonl"], timeout=30)
fifo_so = ROOT / "libfifo.so"
os.mkfifo(fifo_so)
case_says("fifo", "FIFO to plugins inspect", ["plugins", "inspect", str(fifo_so)], ["libfifo.so"], timeout=30)
fifo_dir = ROOT / "fifo-plugins"
fifo_dir.mkdir()
os.mkfifo(fifo_dir / "libvpt_fifo.so")
case("fifo", "FIFO on the plugin path", ["--plugin", str(TINY_SO), "run", TINY, "--set", "run.steps=1", "--out",
                                         "f-path"], want_ok=True, env={"VPT_PLUGIN_PATH": str(fifo_dir)},
     timeout=60)
bom = ROOT / "bom.jsonl"
bom.write_bytes(b'\xef\xbb\xbf{"text": "a b c d"}\n{"text": "e f"}\n')
lm_b = ROOT / "lm-bom.toml"
lm_b.write_text(LM.replace("DATA", str(bom)))
case("data", "JSONL with a UTF-8 BOM", ["run", str(lm_b), "--out", "b-bom"], want_ok=True)
arch = bytearray(TINY_SO.read_bytes())
machine = int.from_bytes(arch[18:20], "little")
arch[18:20] = (62 if machine == 183 else 183).to_bytes(2, "little")
(ROOT / "libvpt_arch.so").write_bytes(bytes(arch))
case_says("plugin file", "inspect: another architecture", ["plugins", "inspect", str(ROOT / "libvpt_arch.so")],
          ["another architecture"])
for name, args, needles in [
    ("run.eval_limit=0", tiny("u-limit", "run.eval_limit=0"), ["run.eval_limit"]),
    ("eval --limit 0", ["--plugin", str(TINY_SO), "eval", TINY, "--limit", "0"], ["--limit"]),
    ("probe --batches 0", ["--plugin", str(TINY_SO), "probe", TINY, "--batches", "0"], ["--batches"]),
    ("probe --batches 1", ["--plugin", str(TINY_SO), "probe", TINY, "--batches", "1"], ["--batches"]),
    ("probe --eta nan", ["--plugin", str(TINY_SO), "probe", TINY, "--eta", "nan"], ["--eta"]),
    ("probe --eta -1", ["--plugin", str(TINY_SO), "probe", TINY, "--eta=-1"], ["--eta"]),
    ("bench --steps 0", ["--plugin", str(TINY_SO), "bench", TINY, "--steps", "0"], ["--steps"]),
    ("compare --seeds 0", ["--plugin", str(TINY_SO), "compare", TINY, "--seeds", "0", "--out", "u-cmp"],
     ["--seeds"]),
    ("run.steps=2^64", tiny("u-big", "run.steps=18446744073709551616"), ["run.steps", "too large"]),
    ("run.threads=-3", tiny("u-thr", "run.threads=-3"), ["run.threads"]),
    ("run.threads=1000000", tiny("u-thr2", "run.threads=1000000"), ["run.threads"]),
    ("run.eval_every_seconds=-1", tiny("u-ees", "run.eval_every_seconds=-1"), ["run.eval_every_seconds"]),
]:
    case_says("input", name, args, needles, timeout=120)

print()
print(f"{len(rows)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
bad = [r for r in rows if r[2] in ("crash", "hang", "data loss", "silent", "unclear", "security")]
for r in bad:
    print("NOT CLEAN:", r)
sys.exit(1 if bad else 0)
