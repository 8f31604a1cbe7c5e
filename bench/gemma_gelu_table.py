"""Where llama.cpp's Gemma NLL differs from transformers': ggml evaluates GELU through an f16
table (input rounded to f16, result stored as f16). Trains a tiny Gemma 2 and Gemma 3 (DoRA, 3
steps), exports the merged folder and an f32 GGUF, and prints llama.cpp's distance from
transformers with the exact GELU and with that table. Run from the repository root with the test
venv: WHETSTONE_BIN=target/debug/whetstone ~/.cache/whetstone/venv/bin/python bench/gemma_gelu_table.py
"""
import json, subprocess, sys, os, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from pathlib import Path
import numpy as np, torch
import tiny_models as tm
from test_export import llama_cpp_nll, max_diff
BIN = os.environ["WHETSTONE_BIN"]
out = Path(tempfile.mkdtemp(prefix="gemma-gelu-"))
env = {**os.environ, "WHETSTONE_HOME": str(out / "home")}
def run(*a):
    return subprocess.run([BIN, *a], env=env, check=True, capture_output=True, text=True).stdout
data = out / "d.jsonl"
data.write_text("".join(json.dumps({"text": tm.TEXT}) + "\n" for _ in range(8)))
text = out / "t.txt"; text.write_text(tm.TEXT)

class TableGelu(torch.nn.Module):
    def forward(self, x):
        return table_gelu(x)

def table_gelu(x):
    # ggml: input rounded to f16, GELU(tanh) evaluated, result stored as f16; exact beyond |x| >= 10
    xf = x.to(torch.float16).to(torch.float32)
    y = torch.nn.functional.gelu(xf, approximate="tanh").to(torch.float16).to(torch.float32)
    y = torch.where(x <= -10, torch.zeros_like(x), y)
    return torch.where(x >= 10, x, y)

for fam in ["gemma2", "gemma3"]:
    model = tm.make_model(out / fam, seed=3, family=fam, query_pre_attn_scalar=16)
    ev = [json.loads(l) for l in run("train", "--model", str(model), "--data", str(data), "--method", "dora",
              "--set", "max_steps=3", "--set", "lr=1e-2", "--set", "lora.targets=all-linear", "--set", "sample_tokens=0",
              "--set", "eval_fraction=0", "--json").splitlines() if l.startswith("{")]
    rid = ev[-1]["run_id"]
    run("export", rid, "--format", "merged", "--dtype", "f32", "--out", str(out / f"{fam}-merged"))
    run("export", rid, "--format", "gguf", "--dtype", "f32", "--out", str(out / f"{fam}-gguf"))
    ref = tm.load_reference(out / f"{fam}-merged")
    ours = json.loads(run("score", "--model", str(model), "--adapter", rid, "--text-file", str(text), "--json"))
    ids = ours["token_ids"]
    cpp = llama_cpp_nll(out / f"{fam}-gguf" / "model.gguf", ids)
    exact = tm.token_nll(ref, ids)
    for layer in ref.model.layers:
        layer.mlp.act_fn = TableGelu()
    tabled = tm.token_nll(ref, ids)
    print(f"{fam}: llama.cpp vs transformers exact GELU {max_diff(cpp, exact):.2e}; "
          f"vs transformers with ggml's f16 GELU table {max_diff(cpp, tabled):.2e}; whetstone vs exact {max_diff(ours['token_nll'], exact):.2e}")
