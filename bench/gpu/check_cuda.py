"""On a CUDA machine: the same work on `--device cpu` and `--device cuda` must agree.

Builds a random tiny Llama (tests/python/tiny_models.py), then compares per-token NLL from
`whetstone score` and the first LoRA step's gradients from `whetstone train
--dump-first-grads` between the two devices. Prints one JSON line with the worst differences.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests/python"))
import tiny_models as tm  # noqa: E402

W = os.environ["WHETSTONE_BIN"]
tmp = Path(tempfile.mkdtemp())
env = dict(os.environ, WHETSTONE_HOME=str(tmp / "home"))
model = tm.make_model(tmp / "tiny", "llama", seed=3)
text = tmp / "t.txt"
text.write_text(tm.TEXT)
data = tmp / "d.txt"
data.write_text("\n".join([tm.TEXT] + tm.CORPUS) + "\n")


def run(*args):
    p = subprocess.run([W, *args], env=env, capture_output=True, text=True, timeout=600)
    if p.returncode:
        sys.exit(f"whetstone {' '.join(args)}: {p.stderr}")
    return p.stdout


out = {}
nll = {d: json.loads(run("score", "--model", str(model), "--text-file", str(text), "--device", d, "--json"))["token_nll"]
       for d in ("cpu", "cuda")}
out["score_max_abs_diff"] = max(abs(a - b) for a, b in zip(nll["cpu"], nll["cuda"]))
grads = {}
for d in ("cpu", "cuda"):
    f = tmp / f"g-{d}.safetensors"
    run("train", "--model", str(model), "--data", str(data), "--set", f"device={d}", "--set", "lora.dropout=0",
        "--set", "lora.targets=all-linear", "--set", "eval_fraction=0", "--dump-first-grads", str(f))
    grads[d] = load_file(f)
worst = 0.0
for k, v in grads["cpu"].items():
    if k.startswith("grad.") and v.abs().max() > 0:
        worst = max(worst, ((v - grads["cuda"][k]).abs().max() / v.abs().max()).item())
out["grad_max_rel_diff"] = worst
out["loss_cpu"], out["loss_cuda"] = grads["cpu"]["loss"].item(), grads["cuda"]["loss"].item()
ev = [json.loads(l) for l in run("train", "--model", str(model), "--data", str(data), "--set", "device=cuda",
                                 "--set", "max_steps=30", "--set", "lr=5e-3", "--set", "eval_every=10",
                                 "--json").splitlines()]
evals = [e["eval_loss"] for e in ev if e["event"] == "eval"]
out["cuda_train_eval_losses"] = evals
out["cuda_train_status"] = ev[-1]["status"]
print(json.dumps(out))
