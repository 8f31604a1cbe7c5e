#!/usr/bin/env python3
"""Resident memory of QLoRA's NF4 base against the f32 base, measured.

Loads the model twice with `whetstone score` on a short text — once in f32, once with
`--nf4` (every decoder linear stored as NF4 while loading, as a QLoRA run does) — and takes
each process's peak RSS from the kernel (wait4). The difference is what NF4 saves; with the
f32 bytes of the linears known, it gives the measured NF4 bytes per parameter.

    bench/qlora_memory.py --model ~/.cache/whetstone/demo/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd, env):
    """Run `cmd`, return (stdout, peak RSS bytes)."""
    pid = os.fork()
    if pid == 0:
        w = os.open(os.devnull, os.O_WRONLY)
        os.dup2(w, 2)
        out = os.open(env["OUT"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.execve(cmd[0], cmd, env)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed")
    return Path(env["OUT"]).read_text(), usage.ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--bin", default=os.environ.get("WHETSTONE_BIN", str(Path.home() / ".cache/whetstone/target/release/whetstone")))
    ap.add_argument("--out", default=str(ROOT / "bench/results/qlora_memory.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        text = Path(home) / "t.txt"
        text.write_text('{"name": "Ingrid Solberg", "age": 29, "city": "Bergen"}\n' * 4)
        env = dict(os.environ, WHETSTONE_HOME=home, OUT=str(Path(home) / "out.json"))
        base = [a.bin, "score", "--model", a.model, "--text-file", str(text), "--json"]
        dense_out, dense = run(base, env)
        nf4_out, nf4 = run(base + ["--nf4"], env)
        est = json.loads(subprocess.run([a.bin, "estimate", "--model", a.model, "--method", "qlora", "--json"],
                                        env=env, check=True, capture_output=True, text=True).stdout)
    # the decoder linears of the model, from the estimate's own parameter split
    lin_params = (est["base_params"] * 4 - est["weight_bytes"]) / (4 - 4.127 / 8)
    f32_bytes = 4 * lin_params
    dense_rss = json.loads(dense_out)["rss_after_load_bytes"]
    nf4_rss = json.loads(nf4_out)["rss_after_load_bytes"]
    # the f32 process holds everything else plus the f32 linears; the NF4 one the same
    # everything else plus the NF4 linears (and the allocator's pages from the last freed
    # f32 tensor, a few MB, which count against NF4 here)
    nf4_bytes = nf4_rss - (dense_rss - f32_bytes)
    result = {
        "model": Path(a.model).name,
        "rss_after_load_f32_base": dense_rss,
        "rss_after_load_nf4_base": nf4_rss,
        "peak_rss_f32_base": dense,
        "peak_rss_nf4_base": nf4,
        "linear_params": round(lin_params),
        "measured_nf4_bytes": round(nf4_bytes),
        "measured_nf4_bits_per_param": 8 * nf4_bytes / lin_params,
        "mean_nll_f32": json.loads(dense_out)["mean_nll"],
        "mean_nll_nf4": json.loads(nf4_out)["mean_nll"],
    }
    direct = json.loads(subprocess.run([a.bin, "measure-nf4", "--count", "300"], check=True, capture_output=True,
                                       text=True).stdout)
    result["direct_nf4_bits_per_param"] = direct["bits_per_param"]
    print(f"direct: 300 NF4 copies of a 576×1536 matrix add {direct['resident_bytes'] / 2**20:.1f} MiB RSS "
          f"= {direct['bits_per_param']:.3f} bits/param")
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"after load: f32 base {dense_rss / 2**20:.0f} MiB, NF4 base {nf4_rss / 2**20:.0f} MiB; "
          f"{lin_params / 1e6:.1f} M linear parameters held in {nf4_bytes / 2**20:.1f} MiB "
          f"= {result['measured_nf4_bits_per_param']:.2f} bits/param (measured); peak RSS "
          f"{dense / 2**20:.0f} → {nf4 / 2**20:.0f} MiB; mean NLL {result['mean_nll_f32']:.4f} → "
          f"{result['mean_nll_nf4']:.4f}")

if __name__ == "__main__":
    main()
