"""Time to train: how long `whetstone train` takes from process start to its first training
step (model loading, tokenization, optimizer set-up — everything before the step itself), and
the wall time of the whole headless demo (`whetstone demo`: 20 LoRA steps with evaluation
and before/after samples).

    python bench/startup.py [--bin OLD_BINARY] [--repeat 3]

`--bin` times another build the same way in the same run (the before of a before/after).
Needs WHETSTONE_BIN and WHETSTONE_DEMO_MODEL, as `./dev bench` sets them. Idle machine only.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def to_first_step(binary, model):
    """Seconds from spawn to the start of step 1 (its end minus its own duration)."""
    home = tempfile.mkdtemp(prefix="whetstone-bench-")
    cmd = [binary, "train", "--model", model, "--data", str(ROOT / "assets/samples/extract.jsonl"),
           "--method", "lora", "--set", "packing=true", "--set", "seq_len=256", "--set", "batch_size=4",
           "--set", "max_steps=1", "--set", "eval_fraction=0", "--set", "save_every=0",
           "--set", "sample_tokens=0", "--json"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=dict(os.environ, WHETSTONE_HOME=home), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    first = None
    for line in p.stdout:
        if first is None and '"event":"step"' in line:
            e = json.loads(line)
            first = time.monotonic() - t0 - e["tokens"] / e["tokens_per_s"]
    if p.wait() != 0 or first is None:
        raise SystemExit(f"{binary} train failed (exit {p.returncode})")
    return first


def demo(binary, model):
    # a fresh data directory that holds the demo model (linked), as after `./dev run`'s set-up
    home = Path(tempfile.mkdtemp(prefix="whetstone-bench-"))
    (home / "models").mkdir()
    (home / "models" / Path(model).name).symlink_to(Path(model).resolve())
    t0 = time.monotonic()
    subprocess.run([binary, "demo"], env=dict(os.environ, WHETSTONE_HOME=home), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="another whetstone binary to time the same way (before)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default=os.environ.get("WHETSTONE_DEMO_MODEL"))
    args = ap.parse_args()
    bins = [("this build", os.environ["WHETSTONE_BIN"])] + ([("--bin", args.bin)] if args.bin else [])
    rows = []
    print(f"{'binary':<11} {'start to first step s':>22} {'demo s':>8}")
    for name, b in bins:
        firsts = [to_first_step(b, args.model) for _ in range(args.repeat)]
        d = demo(b, args.model)
        rows.append({"binary": name, "path": b, "to_first_step_s": firsts, "demo_s": d})
        print(f"{name:<11} {statistics.median(firsts):>22.2f} {d:>8.1f}", flush=True)
    print(json.dumps({"bench": "startup", "results": rows}))


if __name__ == "__main__":
    main()
