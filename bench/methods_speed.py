"""Every method's training step on the same work: Whetstone's tokens/s, peak RSS and which
training path it took (the explicit one of fused CPU kernels, or candle's autograd).

Same work as `lora_vs_peft.py` (the SmolLM2-135M demo GGUF in f32, batch 4 × 256 packed rows,
every position a target, 2 warm-up steps then the median), each method with its own
defaults (BitFit adding the biases Llama lacks) except LoRA-family rank 8 / alpha 16 / dropout 0.05 on q,k,v,o. PyTorch + PEFT's
side of the comparison is `lora_vs_peft.py` (LoRA, full, and QLoRA against LoRA).

    python bench/methods_speed.py [--steps 6] [--threads N] [--methods lora,dora,...]

Needs WHETSTONE_BIN and WHETSTONE_DEMO_MODEL, as `./dev bench` sets them. Idle machine only.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lora_vs_peft import ROOT, measure  # noqa: E402

METHODS = ["full", "freeze", "lora", "qlora", "dora", "lora_plus", "ia3", "bitfit",
           "prompt_tuning", "prefix_tuning", "p_tuning_v2", "adapter"]
LORA_FAMILY = {"lora", "qlora", "dora", "lora_plus"}


def run(method, args, env):
    home = tempfile.mkdtemp(prefix="whetstone-bench-")
    cmd = [os.environ["WHETSTONE_BIN"], "train", "--model", args.model,
           "--data", str(ROOT / "assets/samples/extract.jsonl"), "--method", method,
           "--set", "packing=true", "--set", f"seq_len={args.seq}", "--set", f"batch_size={args.batch}",
           "--set", f"max_steps={args.steps}", "--set", "eval_fraction=0", "--set", "save_every=0",
           "--set", "sample_tokens=0", "--set", "train_on_prompt=true", "--json"]
    if method in LORA_FAMILY:
        cmd += ["--set", "lora.r=8", "--set", "lora.alpha=16", "--set", "lora.dropout=0.05",
                "--set", "lora.targets=q_proj,k_proj,v_proj,o_proj"]
    if method == "bitfit":  # Llama has no biases: BitFit adds zero-initialised ones
        cmd += ["--set", "bitfit.add_biases=true"]
    out, rss = measure(cmd, dict(env, WHETSTONE_HOME=home))
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    steps = [e for e in events if e.get("event") == "step"]
    path = next((e["message"].split(": ", 1)[1] for e in events
                 if e.get("event") == "log" and e.get("message", "").startswith("training path")), "?")
    return {"method": method, "tokens_per_s": statistics.median(s["tokens_per_s"] for s in steps[2:]),
            "peak_rss_bytes": rss, "path": path, "last_loss": steps[-1]["loss"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    ap.add_argument("--model", default=os.environ.get("WHETSTONE_DEMO_MODEL"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    if args.steps < 3:
        sys.exit("--steps must be at least 3 (two warm-up steps, then the median)")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    print(f"every method, {Path(args.model).name} f32 on the CPU, batch {args.batch} x {args.seq}, "
          f"{args.threads} threads, median of steps 3-{args.steps}")
    print(f"{'method':<14} {'tokens/s':>9} {'peak RSS MiB':>13}  path")
    rows = []
    for m in args.methods.split(","):
        r = run(m, args, env)
        rows.append(r)
        print(f"{m:<14} {r['tokens_per_s']:>9.1f} {r['peak_rss_bytes'] / 2**20:>13.0f}  {r['path']}",
              flush=True)
    print(json.dumps({"bench": "methods_step", "threads": args.threads, "batch": args.batch,
                      "seq_len": args.seq, "model": str(args.model), "results": rows}))


if __name__ == "__main__":
    main()
