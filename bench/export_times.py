#!/usr/bin/env python3
"""How long each export takes and how large it is, and what switching adapters on one loaded
base costs, on the SmolLM2 GGUF.

Trains two short runs in a temporary data directory (LoRA r 8 on q,k,v,o and (IA)3), then
times `whetstone export` for every format and dtype that applies, and
`whetstone chat --adapter base --adapter A --adapter B` for the switch times (the base is
loaded once). Wall times include process start and the sha256 of every file written.

    bench/export_times.py --model ~/.cache/whetstone/demo/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--bin", default=os.environ.get("WHETSTONE_BIN", str(Path.home() / ".cache/whetstone/target/debug/whetstone")))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "export_times.json"))
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="wh-export-bench-")
    env = {**os.environ, "WHETSTONE_HOME": home}

    def go(*args):
        t = time.perf_counter()
        r = subprocess.run([a.bin, *args], env=env, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(args)}: {r.stderr}")
        return r.stdout, time.perf_counter() - t

    common = ["--model", a.model, "--data", str(ROOT / "assets/samples/extract.jsonl"), "--set", "max_steps=2",
              "--set", "batch_size=2", "--set", "seq_len=128", "--set", "eval_fraction=0.02",
              "--set", "sample_tokens=0", "--json"]
    runs = {}
    for method in ("lora", "ia3"):
        out, _ = go("train", "--method", method, *common)
        runs[method] = json.loads(out.strip().splitlines()[-1])["run_id"]

    rows = []
    for method, fmt, dtype in [("lora", "peft", None), ("lora", "gguf", None), ("lora", "ollama", None),
                               ("lora", "merged", "f16"), ("lora", "merged", "f32"),
                               ("ia3", "gguf", "f16"), ("ia3", "gguf", "q8_0"), ("ia3", "ollama", None)]:
        args = ["export", runs[method], "--format", fmt, "--out", f"{home}/x-{method}-{fmt}-{dtype}", "--json"]
        if dtype:
            args += ["--dtype", dtype]
        out, wall = go(*args)
        rep = json.loads(out)
        row = {"method": method, "format": fmt, "dtype": dtype, "kind": rep["kind"], "wall_s": round(wall, 2),
               "bytes": sum(f["bytes"] for f in rep["files"])}
        rows.append(row)
        print(f"{method:>5} {fmt:>7} {dtype or '-':>5} {rep['kind']:>15} {wall:7.2f} s {row['bytes'] / 2**20:9.1f} MiB")

    out, wall = go("chat", "--model", a.model, "--adapter", "base", "--adapter", runs["lora"], "--adapter",
                   runs["ia3"], "--temperature", "0", "--max-tokens", "1", "--json", "Hello")
    answers = json.loads(out)["answers"]
    switch = {x["adapter"] if x["adapter"] == "base" else [k for k, v in runs.items() if v == x["adapter"]][0]:
              round(x["switch_s"] * 1e3, 2) for x in answers}
    print(f"adapter switch on one loaded base (ms): {switch}; base load {answers[0]['load_s']:.2f} s")
    result = {"model": Path(a.model).name, "threads": os.cpu_count(), "exports": rows, "switch_ms": switch,
              "base_load_s": round(answers[0]["load_s"], 2)}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {a.out}")


if __name__ == "__main__":
    main()
