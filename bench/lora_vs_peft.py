"""Training throughput and peak memory: Whetstone vs PyTorch + transformers (+ PEFT).

Same model (by default the SmolLM2-135M demo GGUF, dequantized to f32 by both; `--model`
takes an HF folder too), same batch (4 rows of 256 tokens by default, every position a
target), same method: LoRA (r 8, alpha 16, dropout 0.05 on q,k,v,o, or with `--targets all`
on all seven linears), full fine-tuning (`--method full`), or QLoRA (`--method qlora`,
Whetstone only: PyTorch has no NF4 on the CPU; compare it with Whetstone's LoRA). AdamW,
clipping at 1.0, same thread count and device. Each system runs in its own process so its
peak RSS is its own; tokens/s is the median over the steps after two warm-up steps.

The FLOP share divides the step's FLOPs, counted from the model's shapes (the products a
step must compute: frozen weights get input gradients only, causal attention counts its
unmasked half), by the step time and by PyTorch's f32 matmul rate at the model's largest
projection, measured in the same run: the share of the machine's matmul peak the step uses.

    python bench/lora_vs_peft.py [--method lora|full|qlora] [--targets qkvo|all] [--steps 10]
        [--threads N] [--device cuda] [--batch B] [--seq S]

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
TARGET_SETS = {"qkvo": ["q_proj", "k_proj", "v_proj", "o_proj"],
               "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


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
           "--data", str(ROOT / "assets/samples/extract.jsonl"), "--method", args.method,
           "--set", "packing=true", "--set", f"seq_len={args.seq}", "--set", f"batch_size={args.batch}",
           "--set", f"device={args.device}",
           "--set", f"max_steps={args.steps}", "--set", "eval_fraction=0", "--set", "save_every=0",
           "--set", "sample_tokens=0", "--set", "train_on_prompt=true", "--set", f"lora.r={R}",
           "--set", f"lora.alpha={ALPHA}", "--set", f"lora.dropout={DROPOUT}",
           "--set", "lora.targets=" + ",".join(TARGET_SETS[args.targets]), "--set", "lr=2e-4",
           "--set", "weight_decay=0", "--json"]
    if args.method == "full":
        # no LoRA settings: drop each `--set lora.*` pair
        keep = []
        for c in cmd:
            if c.startswith("lora."):
                keep.pop()
            else:
                keep.append(c)
        cmd = keep
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
    flops = step_flops(model.config, batch, seq - 1, args.method, TARGET_SETS[args.targets])
    if args.method != "full":
        model = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                                 target_modules=TARGET_SETS[args.targets],
                                                 task_type="CAUSAL_LM"))
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
    name = "pytorch" if args.method == "full" else "pytorch+peft"
    out = {"system": name, "tokens_per_s": statistics.median(rates[2:]),
           "steps": steps, "first_loss": losses[0], "last_loss": losses[-1], "torch": torch.__version__,
           "flops_per_step": flops, "matmul_gflops": matmul_peak(model.config, batch * (seq - 1))}
    if dev.startswith("cuda"):
        out["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


def step_flops(c, batch, t, method, targets):
    """FLOPs of one training step from the model's shapes: every linear's forward product and
    its input gradient, its weight gradient where the weight trains (full), the LoRA factors'
    three products each way, the output head likewise, and causal attention's unmasked half
    (scores and values forward, four products backward; recomputation is not counted)."""
    n, h, i, v = batch * t, c.hidden_size, c.intermediate_size, c.vocab_size
    d = getattr(c, "head_dim", None) or h // c.num_attention_heads
    q, kv = c.num_attention_heads * d, c.num_key_value_heads * d
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    train_w = method == "full"
    per_layer = 0
    for name, (a, b) in shapes.items():
        per_layer += 2 * n * a * b * (3 if train_w else 2)
        if method != "full" and name in targets:
            per_layer += 2 * n * R * (a + b) * 3
    pairs = batch * t * (t + 1) / 2
    per_layer += 2 * pairs * d * c.num_attention_heads * (2 + 4)
    head = 2 * n * h * v * (3 if train_w else 2)
    return per_layer * c.num_hidden_layers + head


def matmul_peak(c, m):
    """PyTorch's f32 matmul GFLOP/s at the largest projection shape (the machine's practical
    peak for this work)."""
    import torch
    a, b = torch.randn(m, c.hidden_size), torch.randn(c.hidden_size, c.intermediate_size)
    for _ in range(3):
        a @ b
    start, iters = time.perf_counter(), 30
    for _ in range(iters):
        a @ b
    secs = (time.perf_counter() - start) / iters
    return 2 * m * c.hidden_size * c.intermediate_size / secs / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    ap.add_argument("--checkpointing", action="store_true", help="Whetstone with gradient checkpointing")
    ap.add_argument("--model", default=os.environ.get("WHETSTONE_DEMO_MODEL"), help="a GGUF file or HF folder")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--method", choices=["lora", "full", "qlora"], default="lora")
    ap.add_argument("--targets", choices=list(TARGET_SETS), default="qkvo")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "torch":
        return torch_worker(args)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    ours = whetstone(args, env)
    torch_method = "lora" if args.method == "qlora" else args.method
    out, rss = measure([sys.executable, __file__, "--worker", "torch", "--steps", str(args.steps),
                        "--threads", str(args.threads), "--model", args.model, "--device", args.device,
                        "--batch", str(args.batch), "--seq", str(args.seq), "--method", torch_method,
                        "--targets", args.targets], env)
    theirs = json.loads(out.strip().splitlines()[-1])
    theirs["peak_rss_bytes"] = rss
    rows = [ours, theirs]
    flops, peak = theirs.pop("flops_per_step"), theirs.pop("matmul_gflops")
    tokens_per_step = args.batch * (args.seq - 1)
    what = "full fine-tuning" if args.method == "full" else \
        f"{args.method} r {R} on {','.join(TARGET_SETS[args.targets])}"
    print(f"{what}, {Path(args.model).name} f32 on {args.device}, batch {args.batch} x {args.seq}, "
          f"{args.threads} threads{', gradient checkpointing' if args.checkpointing else ''}")
    print(f"step: {flops / 1e9:.0f} GFLOP; PyTorch f32 matmul rate here: {peak:.0f} GFLOP/s")
    print(f"{'system':<14} {'tokens/s':>9} {'peak RSS MiB':>13} {'GFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        r["gflops"] = flops / (tokens_per_step / r["tokens_per_s"]) / 1e9
        r["flop_share"] = r["gflops"] / peak
        print(f"{r['system']:<14} {r['tokens_per_s']:>9.1f} {r['peak_rss_bytes'] / 2**20:>13.0f} "
              f"{r['gflops']:>8.1f} {r['flop_share']:>8.0%}")
    label = "pytorch+peft (lora)" if args.method == "qlora" else theirs["system"]
    print(f"ratio whetstone / {label}: speed {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x, "
          f"memory {ours['peak_rss_bytes'] / theirs['peak_rss_bytes']:.2f}x")
    print(json.dumps({"bench": "train_step", "method": args.method, "targets": args.targets,
                      "threads": args.threads, "batch": args.batch, "seq_len": args.seq,
                      "device": args.device, "model": str(args.model), "flops_per_step": flops,
                      "matmul_peak_gflops": peak, "checkpointing": args.checkpointing,
                      "results": rows}))


if __name__ == "__main__":
    main()
