"""Every method of the comparison table on the real SmolLM2 GGUF: the live table, the
estimator's bad-input errors, and a short run per method that lowers the eval loss, is
killed after its first checkpoint, resumes, and whose checkpoint loads for scoring."""
import json

import pytest
from safetensors import safe_open

from test_train import events, kill_at_first_checkpoint

IDS = ["full", "freeze", "lora", "qlora", "dora", "lora_plus", "ia3", "bitfit", "prompt_tuning",
       "prefix_tuning", "p_tuning_v2", "adapter"]
FIELDS = {"id", "name", "trainable_params", "trainable_percent", "est_memory_bytes", "fits_device",
          "changes_architecture", "inference_latency", "compute", "use_case", "difficulty", "notes"}


def test_the_method_table_has_every_method_with_exact_counts(run, demo_model):
    rows = json.loads(run("methods", "--model", str(demo_model), "--json").stdout)
    assert [r["id"] for r in rows] == IDS
    for r in rows:
        assert FIELDS <= r.keys(), FIELDS - r.keys()
        assert r["trainable_params"] > 0 and r["est_memory_bytes"] > 0
    by = {r["id"]: r for r in rows}
    # LoRA r 8 on q, k, v, o of SmolLM2-135M: 30 layers × 8 × (576+576 + 576+192 + 576+192 + 576+576)
    assert by["lora"]["trainable_params"] == 921_600
    assert by["full"]["trainable_params"] == 134_515_008
    assert abs(by["lora"]["trainable_percent"] - 100 * 921_600 / 134_515_008) < 1e-9
    # QLoRA defaults: r 16 on every linear; its weights are 4-bit
    assert by["qlora"]["trainable_params"] == 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))
    assert by["qlora"]["estimate"]["weight_bytes"] < 0.4 * by["lora"]["estimate"]["weight_bytes"]
    assert by["dora"]["trainable_params"] == 921_600 + 30 * (576 + 192 + 192 + 576)
    assert by["ia3"]["trainable_params"] == 30 * (192 + 192 + 1536)
    assert by["prompt_tuning"]["trainable_params"] == 20 * 576
    assert by["p_tuning_v2"]["trainable_params"] == 20 * 30 * 2 * 192
    # Llama has no biases: the table says BitFit does not apply as is
    assert not by["bitfit"]["applicable"] and "add_biases" in by["bitfit"]["notes"]
    assert sum(r["recommended"] for r in rows) == 1 and by["lora"]["recommended"]  # CPU here


@pytest.mark.parametrize("method,setting,key", [
    ("lora", "lora.r=0", "lora.r"),
    ("lora", "lora.targets=q_proj,c_attn", "lora.targets"),
    ("bitfit", None, "bitfit.add_biases"),
    ("prefix_tuning", "prompt.n_virtual_tokens=64", "prompt.n_virtual_tokens"),
    ("p_tuning_v2", "prompt.n_virtual_tokens=600", "prompt.n_virtual_tokens"),
])
def test_settings_a_method_cannot_take_are_one_line_naming_the_key(run, demo_model, method, setting, key):
    sets = ["--set", "seq_len=64"] + (["--set", setting] if setting else [])
    for cmd in (["estimate"], ["train", "--data", "assets/samples/extract.jsonl"]):
        p = run(*cmd, "--model", str(demo_model), "--method", method, *sets, check=False)
        assert p.returncode == 1, p.stderr
        assert key in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert json.loads(run("runs", "list", "--json").stdout) == []


def test_estimate_reports_its_parts(run, demo_model):
    e = json.loads(run("estimate", "--model", str(demo_model), "--method", "qlora", "--set", "batch_size=2",
                       "--json").stdout)
    parts = e["weight_bytes"] + e["optimizer_bytes"] + e["activation_bytes"] + e["runtime_bytes"]
    assert e["est_memory_bytes"] == e["total_bytes"] == parts
    assert e["config"]["lora"]["r"] == 16 and e["fits_device"] and e["device"] == "cpu:0"
    # dtype=auto is f32 on the CPU; bf16 halves what is not NF4, but on the CPU it trains
    # through autograd, which keeps far more activations than the explicit f32 path
    assert e["config"]["dtype"] == "auto" and e["compute_dtype"] == "f32"
    b = json.loads(run("estimate", "--model", str(demo_model), "--method", "qlora", "--set", "batch_size=2",
                       "--set", "dtype=bf16", "--json").stdout)
    assert b["compute_dtype"] == "bf16" and b["optimizer_bytes"] == e["optimizer_bytes"]
    assert b["weight_bytes"] < 0.8 * e["weight_bytes"] and b["activation_bytes"] > 2 * e["activation_bytes"]
    p = run("estimate", "--model", str(demo_model), "--method", "qlora", "--set", "dtype=f16", check=False)
    assert p.returncode == 1 and "dtype" in p.stderr and "loss scaling" in p.stderr


# lr where a method's default is tuned for long runs: 4 steps must show the direction
FAST_LR = {"full": "1e-4", "freeze": "1e-4", "bitfit": "1e-2", "adapter": "3e-3", "ia3": "1e-2"}


@pytest.mark.parametrize("method", IDS)
def test_every_method_trains_resumes_and_reloads_on_smollm2(run, home, whetstone_bin, demo_model, tmp_path, method):
    args = ["train", "--model", str(demo_model), "--data", "assets/samples/extract.jsonl", "--method", method,
            "--set", "max_steps=4", "--set", "save_every=2", "--set", "eval_every=0", "--set", "batch_size=2",
            "--set", "seq_len=192", "--set", "eval_fraction=0.02", "--set", "sample_tokens=0",
            "--set", "bitfit.add_biases=true", "--json"]
    if method in FAST_LR:
        args += ["--set", f"lr={FAST_LR[method]}"]
    _, run_id, killed_at = kill_at_first_checkpoint(whetstone_bin, home, args, 300)
    assert killed_at == 2
    resumed = events(run("resume", run_id, "--json", timeout=600).stdout)
    assert resumed[0]["event"] == "started" and resumed[0]["resumed_from"] == 2
    assert [e["step"] for e in resumed if e["event"] == "step"] == [3, 4]
    fin = resumed[-1]
    assert fin["event"] == "finished" and fin["status"] == "completed"
    s = fin["summary"]
    assert s["best_eval_loss"] < s["first_eval_loss"], s
    text = tmp_path / "t.txt"
    text.write_text('{"name": "Ingrid Solberg", "age": 29, "city": "Bergen"}')
    tuned = json.loads(run("score", "--model", str(demo_model), "--adapter", run_id, "--text-file", str(text),
                           "--json").stdout)
    base = json.loads(run("score", "--model", str(demo_model), "--text-file", str(text), "--json").stdout)
    assert tuned["mean_nll"] != base["mean_nll"]


def test_qlora_in_bf16_trains_resumes_exactly_and_saves_f32_adapters(run, home, whetstone_bin, demo_model):
    # QLoRA's GPU setting (NF4 base, bf16 compute) run on the CPU, which computes bf16 too
    args = ["train", "--model", str(demo_model), "--data", "assets/samples/extract.jsonl", "--method", "qlora",
            "--set", "max_steps=4", "--set", "save_every=2", "--set", "eval_every=0", "--set", "batch_size=2",
            "--set", "seq_len=128", "--set", "eval_fraction=0.02", "--set", "sample_tokens=0",
            "--set", "dtype=bf16", "--json"]
    whole = events(run(*args, timeout=600).stdout)
    assert any(e["event"] == "log" and "computing in bf16" in e["message"] for e in whole)
    fin = whole[-1]
    assert fin["event"] == "finished" and fin["status"] == "completed", fin
    assert fin["summary"]["best_eval_loss"] < fin["summary"]["first_eval_loss"], fin["summary"]
    losses = {e["step"]: e["loss"] for e in whole if e["event"] == "step"}

    before, run_id, killed_at = kill_at_first_checkpoint(whetstone_bin, home, args, 300)
    assert killed_at == 2
    resumed = events(run("resume", run_id, "--json", timeout=600).stdout)
    got = {e["step"]: e["loss"] for e in before + resumed if e["event"] == "step"}
    # the checkpoint holds the f32 masters, so the resumed bf16 run continues exactly
    assert got == losses
    with safe_open(home / "runs" / run_id / "checkpoints" / "last" / "adapter_model.safetensors", "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}
    assert dtypes == {"torch.float32"}
