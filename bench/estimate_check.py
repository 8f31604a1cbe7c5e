#!/usr/bin/env python3
"""Estimated vs measured peak memory of real training runs (issue 6's ±20 % bar).

For each configuration: `whetstone estimate --json`, then a short `whetstone train --json`
with packing (rows are full `seq_len`, as the estimate assumes); the measured peak is the
process's high-water RSS reported in the run summary. Run on an otherwise idle machine:

    bench/estimate_check.py --model ~/.cache/whetstone/demo/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Configurations the slack factors were measured on (estimate.rs), and fresh ones that only
# check them: different methods, batch sizes, lengths and checkpointing.
CALIBRATION = [
    ("lora", ["batch_size=2", "seq_len=256"]),
    ("qlora", ["batch_size=2", "seq_len=256"]),
    ("prefix_tuning", ["batch_size=2", "seq_len=256"]),
    ("lora", ["batch_size=4", "seq_len=256", "gradient_checkpointing=true"]),
    ("ia3", ["batch_size=4", "seq_len=128"]),
]
CONFIGS = [
    ("lora", ["batch_size=1", "seq_len=512"]),
    ("dora", ["batch_size=2", "seq_len=128"]),
    ("qlora", ["batch_size=1", "seq_len=384"]),
    ("adapter", ["batch_size=2", "seq_len=256"]),
    ("p_tuning_v2", ["batch_size=4", "seq_len=128"]),
    ("lora", ["batch_size=2", "seq_len=512", "gradient_checkpointing=true"]),
    ("full", ["batch_size=1", "seq_len=256"]),
    ("freeze", ["batch_size=2", "seq_len=256"]),
]

# bf16 compute (dtype=bf16; what dtype=auto picks on GPUs with native bf16), measured on the
# CPU, which runs bf16 by widening each matmul to f32
BF16 = [
    ("lora", ["batch_size=1", "seq_len=512", "dtype=bf16"]),
    ("qlora", ["batch_size=1", "seq_len=384", "dtype=bf16"]),
    ("full", ["batch_size=1", "seq_len=256", "dtype=bf16"]),
    ("lora", ["batch_size=2", "seq_len=512", "gradient_checkpointing=true", "dtype=bf16"]),
    ("prefix_tuning", ["batch_size=2", "seq_len=256", "dtype=bf16"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--bin", default=os.environ.get("WHETSTONE_BIN", str(Path.home() / ".cache/whetstone/target/release/whetstone")))
    ap.add_argument("--data", default=str(ROOT / "assets/samples/extract.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/estimate_check.json"))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--calibration", action="store_true", help="the configurations the factors came from")
    ap.add_argument("--bf16", action="store_true", help="the bf16 configurations")
    a = ap.parse_args()
    configs = CALIBRATION if a.calibration else BF16 if a.bf16 else CONFIGS
    rows = []
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, WHETSTONE_HOME=home)
        for method, sets in configs:
            flags = [x for s in sets for x in ("--set", s)]
            est = json.loads(subprocess.run([a.bin, "estimate", "--model", a.model, "--method", method, *flags, "--json"],
                                            env=env, check=True, capture_output=True, text=True).stdout)
            run = subprocess.run([a.bin, "train", "--model", a.model, "--data", a.data, "--method", method, *flags,
                                  "--set", "packing=true", "--set", f"max_steps={a.steps}", "--set", "eval_every=0",
                                  "--set", "sample_tokens=0", "--set", "bitfit.add_biases=true", "--json"],
                                 env=env, check=True, capture_output=True, text=True).stdout
            fin = [json.loads(l) for l in run.splitlines() if '"finished"' in l][-1]
            measured = fin["summary"]["peak_mem_bytes"]
            ratio = est["est_memory_bytes"] / measured
            rows.append({"method": method, "settings": sets, "estimated_bytes": est["est_memory_bytes"],
                         "measured_peak_bytes": measured, "ratio": ratio,
                         "tokens_per_s": fin["summary"]["tokens_per_s"]})
            print(f"{method:14} {' '.join(sets):48} est {est['est_memory_bytes'] / 2**20:8.0f} MiB  "
                  f"measured {measured / 2**20:8.0f} MiB  est/measured {ratio:.2f}", flush=True)
    Path(a.out).write_text(json.dumps({"model": Path(a.model).name, "rows": rows}, indent=2) + "\n")
    bad = [r for r in rows if not 0.8 <= r["ratio"] <= 1.2]
    print(f"{len(rows) - len(bad)} of {len(rows)} within ±20 %")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
