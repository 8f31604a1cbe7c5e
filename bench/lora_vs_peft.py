"""LoRA training throughput and peak memory: Whetstone vs PyTorch + transformers + PEFT.

Same model (by default the SmolLM2-135M demo GGUF, dequantized to f32 by both; `--model`
takes an HF folder too), same batch (4 rows of 256 tokens by default, every position a
target), same LoRA (r 8, alpha 16, dropout 0.05 on q,k,v,o), AdamW, clipping at 1.0, same
thread count and device. Each system runs in its own process so its peak RSS is its own;
tokens/s is the median over the steps after two warm-up steps.

    python bench/lora_vs_peft.py [--steps 10] [--threads N] [--device cuda] [--batch B] [--seq S]

Needs WHETSTONE_BIN (the built binary) and WHETSTONE_DEMO_MODEL (the GGUF); `./dev bench`
sets both. Run on an otherwise idle machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
R, ALPHA, DROPOUT = 8, 16, 0.05
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def measure(cmd, env):
    """Run a command; return (stdout, peak RSS bytes of that process alone)."""
    err = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err)
    chunks = []
    while True:
        data = p.stdout.read()
        if not data:
            break
        chunks.append(data)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        err.seek(0)
        sys.exit(f"{' '.join(cmd[:2])} failed ({p.returncode}):\n{err.read().decode()}")
    return b"".join(chunks).decode(), usage.ru_maxrss * 1024


def whetstone(args, env):
    home = tempfile.mkdtemp(prefix="whetstone-bench-")
    env = dict(env, WHETSTONE_HOME=home)
    cmd = [os.environ["WHETSTONE_BIN"], "train", "--model", args.model,
           "--data", str(ROOT / "assets/samples/extract.jsonl"), "--method", "lora",
           "--set", "packing=true", "--set", f"seq_len={args.seq}", "--set", f"batch_size={args.batch}",
           "--set", f"device={args.device}",
           "--set", f"max_steps={args.steps}", "--set", "eval_fraction=0", "--set", "save_every=0",
           "--set", "sample_tokens=0", "--set", "train_on_prompt=true", "--set", f"lora.r={R}",
           "--set", f"lora.alpha={ALPHA}", "--set", f"lora.dropout={DROPOUT}",
           "--set", "lora.targets=" + ",".join(TARGETS), "--set", "lr=2e-4", "--json"]
    if args.checkpointing:
        cmd += ["--set", "gradient_checkpointing=true"]
    out, rss = measure(cmd, env)
    steps = [json.loads(l) for l in out.splitlines() if '"event":"step"' in l]
    rates = [s["tokens_per_s"] for s in steps[2:]]
    return {"system": "whetstone", "tokens_per_s": statistics.median(rates), "peak_rss_bytes": rss,
            "steps": len(steps), "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"]}


def torch_worker(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    steps, batch, seq, dev = args.steps, args.batch, args.seq, args.device
    torch.set_flush_denormal(True)  # without it the first LoRA steps are ~13x slower here
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = Path(args.model)
    if path.is_dir():
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=torch.float32)
    model = model.to(dev)
    model = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
    vocab = model.config.vocab_size
    # Whetstone feeds seq_len - 1 inputs per packed row of seq_len tokens; do the same.
    ids = torch.randint(0, vocab, (batch, seq), device=dev)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    rates, losses = [], []
    for _ in range(steps):
        sync()
        t = time.perf_counter()
        out = model(input_ids=ids[:, :-1])
        logits = out.logits.reshape(-1, vocab)
        loss = torch.nn.functional.cross_entropy(logits, ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        sync()
        rates.append(batch * (seq - 1) / (time.perf_counter() - t))
    out = {"system": "pytorch+peft", "tokens_per_s": statistics.median(rates[2:]),
           "steps": steps, "first_loss": losses[0], "last_loss": losses[-1], "torch": torch.__version__}
    if dev.startswith("cuda"):
        out["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    ap.add_argument("--checkpointing", action="store_true", help="Whetstone with gradient checkpointing")
    ap.add_argument("--model", default=os.environ.get("WHETSTONE_DEMO_MODEL"), help="a GGUF file or HF folder")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "torch":
        return torch_worker(args)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    ours = whetstone(args, env)
    out, rss = measure([sys.executable, __file__, "--worker", "torch", "--steps", str(args.steps),
                        "--threads", str(args.threads), "--model", args.model, "--device", args.device,
                        "--batch", str(args.batch), "--seq", str(args.seq)], env)
    theirs = json.loads(out.strip().splitlines()[-1])
    theirs["peak_rss_bytes"] = rss
    rows = [ours, theirs]
    print(f"LoRA step, {Path(args.model).name} f32 on {args.device}, batch {args.batch} x {args.seq}, "
          f"r {R} on {','.join(TARGETS)}, {args.threads} threads"
          f"{', gradient checkpointing' if args.checkpointing else ''}")
    print(f"{'system':<14} {'tokens/s':>9} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['system']:<14} {r['tokens_per_s']:>9.1f} {r['peak_rss_bytes'] / 2**20:>13.0f}")
    print(f"ratio whetstone / pytorch: speed {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x, "
          f"memory {ours['peak_rss_bytes'] / theirs['peak_rss_bytes']:.2f}x")
    print(json.dumps({"bench": "lora_vs_peft", "threads": args.threads, "batch": args.batch, "seq_len": args.seq,
                      "device": args.device, "model": str(args.model),
                      "checkpointing": args.checkpointing, "results": rows}))


if __name__ == "__main__":
    main()
