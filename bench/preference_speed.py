"""SFT against the preference objectives on the same records: tokens/s, peak RSS, the
training path each took and the reference pass's time.

The records are the SmolLM2 DPO test's generated task (where does the person live? the
rejected answer names another city; 60 pairs of about 70 tokens each). SFT learns their
chosen answers; DPO, ORPO and KTO the pairs (KTO splits each pair into a desirable and an
undesirable answer). LoRA with its defaults, batch 4 records, the demo GGUF in f32; the
first two steps are warm-up, then the median. A preference record is two sequences, so it
carries about twice SFT's tokens per step.

    python bench/preference_speed.py [--steps 8] [--objectives sft,dpo,orpo,kto]

Needs WHETSTONE_BIN and WHETSTONE_DEMO_MODEL, as `./dev bench` sets them. Idle machine only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests/python"))
from test_preference import city_pairs, smol_pairs  # noqa: E402


def run(objective, data, args):
    env = dict(os.environ, WHETSTONE_HOME=tempfile.mkdtemp(prefix="whetstone-bench-"))
    cmd = [os.environ["WHETSTONE_BIN"], "train", "--model", os.environ["WHETSTONE_DEMO_MODEL"],
           "--data", str(data), "--method", "lora", "--set", f"objective={objective}",
           "--set", f"max_steps={args.steps}", "--set", "batch_size=4", "--set", "eval_fraction=0",
           "--set", "save_every=0", "--set", "sample_tokens=0", "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=True).stdout
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step"][2:]
    logs = [e["message"] for e in events if e["event"] == "log"]
    summary = events[-1]["summary"]
    return {
        "objective": objective,
        "tokens_per_s": statistics.median(e["tokens_per_s"] for e in steps),
        "peak_gib": summary["peak_mem_bytes"] / 2**30,
        "path": next((m.split(": ", 1)[1] for m in logs if m.startswith("training path")), "?"),
        "reference": next((m for m in logs if m.startswith("reference log-probabilities of")), ""),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--objectives", default="sft,dpo,orpo,kto")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp()) / "cities.jsonl"
    smol_pairs(data, city_pairs())
    rows = [run(o, data, args) for o in args.objectives.split(",")]
    sft = next((r for r in rows if r["objective"] == "sft"), None)
    print(f"{'objective':<10} {'tokens/s':>9} {'vs SFT':>7} {'peak GiB':>9}  path / reference pass")
    for r in rows:
        ratio = f"{r['tokens_per_s'] / sft['tokens_per_s']:.2f}x" if sft else "-"
        print(f"{r['objective']:<10} {r['tokens_per_s']:>9.0f} {ratio:>7} {r['peak_gib']:>9.2f}  {r['path']}"
              + (f"; {r['reference']}" if r["reference"] else ""))


if __name__ == "__main__":
    main()
