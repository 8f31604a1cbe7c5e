"""Training through the `whetstone` binary: gradients against PEFT, exact resume after a
SIGKILL, datasets, bad input, and the demo on the real SmolLM2 model."""
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

import tiny_models as tm

LINES = [
    "Whetstone fine-tunes language models on your own machine.",
    "The quick brown fox jumps over the lazy dog.",
    "Low-rank adapters train two small matrices per layer.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "Numbers like 12345 and 2024 are split into digits by some tokenizers.",
    "Fine-tuning adapts a pretrained language model to a new task.",
    "def add(a, b):",
    "return a + b",
]


@pytest.fixture
def tiny(tmp_path):
    return tm.make_model(tmp_path / "tiny-llama", "llama", seed=11)


@pytest.fixture
def text_data(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("\n".join(LINES * 6) + "\n")
    return f


@pytest.mark.parametrize("dora", [False, True])
def test_lora_gradients_match_peft(run, tmp_path, tiny, text_data, dora):
    # A PEFT adapter with random A *and* B (B = 0 at init would make A's gradient zero).
    ref = tm.load_reference(tiny)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM",
                     use_dora=dora)
    peft_model = get_peft_model(ref, cfg)
    tm.randomize_adapter(peft_model, seed=5, scale=0.2)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    dump = tmp_path / "grads.safetensors"
    run("train", "--model", str(tiny), "--data", str(text_data), "--method", "dora" if dora else "lora",
        "--set", f"lora.init={adapter}", "--set", "lora.r=4", "--set", "lora.alpha=8",
        "--set", "lora.dropout=0", "--set", "lora.targets=all-linear",
        "--set", "batch_size=6", "--set", "eval_fraction=0",
        "--dump-first-grads", str(dump))
    ours = load_file(dump)
    assert len(ours["batch.0.targets"]) > 20
    checked, worst, batch = tm.compare_peft_gradients(peft_model, ours, ref.config.vocab_size)
    assert batch == 6
    assert checked == (3 if dora else 2) * 7 * ref.config.num_hidden_layers
    print(f"{'DoRA' if dora else 'LoRA'} gradients vs PEFT: {checked} tensors, worst relative difference {worst:.2e}")


@pytest.mark.parametrize("method,extra,peft_type", [
    ("lora", ["--set", "lora.targets=q_proj,v_proj,down_proj", "--set", "lora.rslora=true"], "LORA"),
    ("lora_plus", ["--set", "lora.targets=q_proj,v_proj,down_proj"], "LORA"),
    ("dora", ["--set", "lora.targets=q_proj,k_proj,o_proj,up_proj"], "LORA"),
    ("ia3", ["--set", "lr=5e-2", "--set", "ia3.targets=k_proj,v_proj,up_proj,down_proj"], "IA3"),
    ("prompt_tuning", ["--set", "lr=5e-2", "--set", "prompt.n_virtual_tokens=5"], "PROMPT_TUNING"),
    # the MLP trains, the saved prefixes are its output; PEFT loads them as past key/values
    ("prefix_tuning", ["--set", "prompt.n_virtual_tokens=6", "--set", "prefix.encoder_hidden=24"], "PREFIX_TUNING"),
    ("p_tuning_v2", ["--set", "prompt.n_virtual_tokens=4"], "PREFIX_TUNING"),
    # LoRA trained over the NF4 base: the adapter is a plain PEFT LoRA adapter
    ("qlora", ["--set", "lora.r=4"], "LORA"),
])
def test_trained_adapter_loads_in_peft_with_the_same_nll(run, home, tmp_path, tiny, text_data, method, extra,
                                                          peft_type):
    from peft import PeftModel

    evs = events(run("train", "--model", str(tiny), "--data", str(text_data), "--method", method,
                     "--set", "max_steps=5", "--set", "lr=1e-2", *extra, "--set", "sample_tokens=0",
                     "--json").stdout)
    run_id = evs[-1]["run_id"]
    adapter = home / "runs" / run_id / "checkpoints" / "last"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["peft_type"] == peft_type and cfg.get("use_dora", False) == (method == "dora")
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    ours = json.loads(run("score", "--model", str(tiny), "--adapter", run_id, "--text-file", str(text), "--json").stdout)
    base = json.loads(run("score", "--model", str(tiny), "--text-file", str(text), "--json").stdout)
    peft_model = PeftModel.from_pretrained(tm.load_reference(tiny), adapter)
    peft_model.eval()
    if peft_type == "PROMPT_TUNING":
        # PEFT returns logits for the virtual tokens too: drop them
        with torch.no_grad():
            logits = peft_model(input_ids=torch.tensor([ours["token_ids"]])).logits[0, 5:].double()
        logp = torch.log_softmax(logits[:-1], dim=-1)
        ids = ours["token_ids"]
        theirs = (-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]).tolist()
    else:
        theirs = tm.token_nll(peft_model, ours["token_ids"])
    diff = max(abs(a - b) for a, b in zip(ours["token_nll"], theirs))
    assert diff < 1e-3, diff
    # greedy decoding with the KV cache (and, for prompt tuning, the shifted positions) picks
    # the tokens the full PEFT forward picks
    out = json.loads(run("chat", "--model", str(tiny), "--adapter", run_id, "--raw", "--temperature", "0",
                         "--repetition-penalty", "1", "--max-tokens", "12", "--json", "The quick brown").stdout)
    tm.assert_greedy_agrees(tm.last_logits(peft_model), out["prompt_ids"], out["token_ids"])
    assert max(abs(a - b) for a, b in zip(ours["token_nll"], base["token_nll"])) > 1e-3, "the adapter changed nothing"


def test_houlsby_adapters_train_save_and_reload(run, home, tmp_path, tiny, text_data):
    from safetensors.torch import load_file as load_st

    evs = events(run("train", "--model", str(tiny), "--data", str(text_data), "--method", "adapter",
                     "--set", "adapter.bottleneck=8", "--set", "max_steps=8", "--set", "lr=1e-2",
                     "--set", "eval_every=4", "--set", "sample_tokens=0", "--json").stdout)
    evals = [e["eval_loss"] for e in evs if e["event"] == "eval"]
    assert evals[-1] < evals[0], evals
    started = evs[0]
    layers, hidden = 2, 64
    assert started["trainable_params"] == layers * 2 * (8 * hidden + 8 + hidden * 8 + hidden)
    saved = load_st(home / "runs" / evs[-1]["run_id"] / "checkpoints" / "last" / "trainable.safetensors")
    assert len(saved) == layers * 2 * 4 and saved["model.layers.1.adapter_ffn.down.weight"].shape == (8, hidden)
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    base = json.loads(run("score", "--model", str(tiny), "--text-file", str(text), "--json").stdout)
    tuned = json.loads(run("score", "--model", str(tiny), "--adapter", evs[-1]["run_id"], "--text-file", str(text),
                           "--json").stdout)
    assert tuned["mean_nll"] != base["mean_nll"]
    expect_user_error(run, ["train", "--model", str(tiny), "--data", str(text_data), "--method", "adapter",
                            "--set", "adapter.bottleneck=64"], "adapter.bottleneck", "hidden size (64)")
    # the default fits the model: 64, or half the hidden size where that is smaller (32 here)
    evs = events(run("train", "--model", str(tiny), "--data", str(text_data), "--method", "adapter",
                     "--set", "max_steps=1", "--set", "sample_tokens=0", "--json").stdout)
    assert evs[-1]["event"] == "finished" and evs[-1]["status"] == "completed", evs[-1]
    layers = json.loads((tiny / "config.json").read_text())["num_hidden_layers"]
    assert evs[0]["trainable_params"] == layers * 2 * (2 * 32 * 64 + 32 + 64), evs[0]


def events(stdout: str):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def step_losses(evs):
    return [(e["step"], e["loss"]) for e in evs if e["event"] == "step"]


TRAIN_ARGS = ["--method", "lora", "--set", "max_steps=240", "--set", "save_every=5",
              "--set", "eval_every=0", "--set", "batch_size=4", "--set", "lora.dropout=0.1",
              "--set", "lr=5e-3", "--set", "sample_tokens=0", "--json"]


def kill_at_first_checkpoint(whetstone_bin, home, args, timeout_s):
    """Run `whetstone <args>` (NDJSON events) and SIGKILL it at its first `last` checkpoint:
    returns the events seen, the run id and the checkpoint's step."""
    env = dict(os.environ, WHETSTONE_HOME=str(home))
    p = subprocess.Popen([whetstone_bin, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, run_id, ckpt_step = [], None, None
    deadline = time.time() + timeout_s
    for line in p.stdout:
        e = json.loads(line)
        seen.append(e)
        run_id = e.get("run_id", run_id)
        if e["event"] == "checkpoint" and not e["best"]:
            ckpt_step = e["step"]
            os.kill(p.pid, signal.SIGKILL)
            break
        assert time.time() < deadline, f"no checkpoint within {timeout_s} s"
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL, p.stderr.read()
    return seen, run_id, ckpt_step


def test_sigkill_then_resume_reproduces_the_uninterrupted_losses(run, home, whetstone_bin, tiny, text_data):
    whole = events(run("train", "--model", str(tiny), "--data", str(text_data), *TRAIN_ARGS).stdout)
    assert whole[-1]["event"] == "finished" and whole[-1]["status"] == "completed"
    reference = step_losses(whole)
    assert len(reference) == 240

    before, run_id, ckpt_step = kill_at_first_checkpoint(
        whetstone_bin, home, ["train", "--model", str(tiny), "--data", str(text_data), *TRAIN_ARGS], 120)
    assert ckpt_step == 5 and run_id

    shown = json.loads(run("runs", "show", run_id, "--json").stdout)
    assert shown["status"] == "interrupted" and shown["steps_done"] >= ckpt_step
    resumed = events(run("resume", run_id, "--json").stdout)
    assert resumed[0]["event"] == "started" and resumed[0]["resumed_from"] == ckpt_step
    joined = [s for s in step_losses(before) if s[0] <= ckpt_step] + step_losses(resumed)
    assert joined == reference, "losses after resume differ from the uninterrupted run"
    tokens = [(e["step"], e["tokens"]) for e in before + resumed if e["event"] == "step" and
              (e in resumed or e["step"] <= ckpt_step)]
    assert tokens == [(e["step"], e["tokens"]) for e in whole if e["event"] == "step"]

    db = sqlite3.connect(home / "whetstone.db")
    status, steps = db.execute("SELECT status, steps_done FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert (status, steps) == ("completed", 240)
    stored = db.execute("SELECT step, loss FROM run_metrics WHERE run_id = ? AND kind = 'train' ORDER BY step",
                        (run_id,)).fetchall()
    assert [(s, l) for s, l in stored] == reference
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_freeze_and_full_train_and_resume_refuses_a_finished_run(run, tiny, text_data):
    for method, extra in [("freeze", ["--set", "freeze.trainable_layers=1"]), ("full", [])]:
        evs = events(run("train", "--model", str(tiny), "--data", str(text_data), "--method", method,
                         "--set", "max_steps=12", "--set", "lr=1e-3", "--set", "eval_every=6",
                         "--set", "sample_tokens=4", *extra, "--json").stdout)
        evals = [e["eval_loss"] for e in evs if e["event"] == "eval"]
        assert len(evals) == 3 and evals[-1] < evals[0], (method, evals)
        assert any(e["event"] == "sample" for e in evs)
        started = evs[0]
        assert started["event"] == "started"
        if method == "freeze":
            assert started["trainable_params"] < started["total_params"] / 2
        else:
            assert started["trainable_params"] == started["total_params"]
        p = run("resume", evs[-1]["run_id"], check=False)
        assert p.returncode == 1 and "already completed" in p.stderr


SHOW_FIELDS = {"id", "status", "method", "model", "dataset", "config", "steps_done", "best_eval_loss",
               "final_train_loss", "tokens_per_s", "peak_mem_bytes", "created_at", "finished_at"}


def test_runs_list_show_compare_delete(run, run_json, home, tiny, text_data):
    ids = []
    for r in (4, 8):
        evs = events(run("train", "--model", str(tiny), "--data", str(text_data), "--set", "max_steps=6",
                         "--set", f"lora.r={r}", "--set", "eval_every=3", "--set", "sample_tokens=0", "--json").stdout)
        ids.append(evs[-1]["run_id"])
    listed = run_json("runs", "list")
    assert [r["id"] for r in listed] == ids
    shown = run_json("runs", "show", ids[0])
    assert SHOW_FIELDS <= shown.keys()
    assert shown["status"] == "completed" and shown["steps_done"] == 6 and shown["config"]["lora"]["r"] == 4
    assert shown["best_eval_loss"] <= shown["first_eval_loss"] and shown["tokens_per_s"] > 0
    compared = run_json("runs", "compare", *ids)
    assert [r["id"] for r in compared["runs"]] == ids
    assert compared["runs"][1]["trainable_params"] == 2 * compared["runs"][0]["trainable_params"]
    assert [len(c["train"]) for c in compared["curves"]] == [6, 6]
    assert [s for s, _ in compared["curves"][0]["eval"]] == [0, 3, 6]
    # the same curves by tokens trained on: increasing, the same losses, evals at their step's count
    by_tok = compared["curves"][0]["train_by_tokens"]
    assert [l for _, l in by_tok] == [l for _, l in compared["curves"][0]["train"]]
    assert all(a[0] < b[0] for a, b in zip(by_tok, by_tok[1:])) and by_tok[0][0] > 0
    assert [t for t, _ in compared["curves"][0]["eval_by_tokens"]] == [0, by_tok[2][0], by_tok[5][0]]
    assert shown["dataset_sha256"] and shown["app_version"]
    text = run("runs", "compare", *ids).stdout
    assert "best eval loss" in text and ids[1] in text
    rep = run_json("runs", "report", *ids, "--out", str(home / "report"))
    md = Path(rep["markdown"]).read_text()
    assert ids[0] in md and "best eval loss" in md and "train-loss.svg" in md
    assert rep["skipped"] == [] and len(rep["charts"]) == 4
    svg = (home / "report" / "train-loss.svg").read_text()
    assert svg.startswith("<svg") and ids[1] in svg
    assert (home / "report" / "eval-loss.png").read_bytes()[:4] == b"\x89PNG"
    run_json("runs", "report", *ids, "--out", str(home / "report-tokens"), "--by", "tokens")
    assert "tokens trained on" in (home / "report-tokens" / "train-loss.svg").read_text()
    expect_user_error(run, ["runs", "report", *ids, "--out", str(home / "r3"), "--by", "time"], "--by")
    expect_user_error(run, ["runs", "show", "run-99"], "no run `run-99`")
    deleted = run_json("runs", "delete", ids[0])
    assert not Path(deleted["run_dir"]).exists()
    assert [r["id"] for r in run_json("runs", "list")] == ids[1:]
    db = sqlite3.connect(home / "whetstone.db")
    assert db.execute("SELECT COUNT(*) FROM run_metrics WHERE run_id = ?", (ids[0],)).fetchone()[0] == 0


def test_a_comma_list_of_methods_queues_one_run_each_and_compares(run, run_json, home, tiny, text_data):
    p = run("train", "--model", str(tiny), "--data", str(text_data), "--method", "lora,ia3,freeze",
            "--set", "max_steps=4", "--set", "sample_tokens=0", "--set", "freeze.trainable_layers=1")
    assert "best eval loss" in p.stdout and "run-3" in p.stdout
    runs = run_json("runs", "list")
    assert [(r["id"], r["method"], r["status"]) for r in runs] == [
        ("run-1", "lora", "completed"), ("run-2", "ia3", "completed"), ("run-3", "freeze", "completed")]
    assert len({json.dumps(r["config"]["seed"]) for r in runs}) == 1
    # a bad method anywhere in the list writes nothing
    expect_user_error(run, ["train", "--model", str(tiny), "--data", str(text_data), "--method", "lora,dora9"],
                      "unknown method `dora9`")
    expect_user_error(run, ["train", "--model", str(tiny), "--data", str(text_data), "--method", "lora,bitfit"],
                      "bitfit")
    assert len(run_json("runs", "list")) == 3


def test_two_processes_train_into_one_data_directory(whetstone_bin, home, tiny, text_data):
    env = dict(os.environ, WHETSTONE_HOME=str(home))
    args = [whetstone_bin, "train", "--model", str(tiny), "--data", str(text_data), "--set", "max_steps=40",
            "--set", "eval_every=10", "--set", "save_every=10", "--set", "sample_tokens=0", "--json"]
    procs = [subprocess.Popen([*args, "--set", f"seed={s}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    ids = sorted(events(o[0])[-1]["run_id"] for o in outs)
    assert ids == ["run-1", "run-2"]
    db = sqlite3.connect(home / "whetstone.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for run_id in ids:
        n = db.execute("SELECT COUNT(*) FROM run_metrics WHERE run_id = ? AND kind = 'train'", (run_id,)).fetchone()
        assert n[0] == 40
    assert db.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 1


def test_an_unwritable_runs_folder_is_a_clear_error_and_leaves_no_run(run, home, tiny, text_data):
    run("datasets", "list")  # creates the directory and the database
    # root may write anywhere, so make the folder unusable by putting a file in its place
    (home / "runs").rmdir()
    (home / "runs").write_text("not a folder")
    expect_user_error(run, ["train", "--model", str(tiny), "--data", str(text_data)], str(home / "runs"))
    db = sqlite3.connect(home / "whetstone.db")
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def expect_user_error(run, args, *needles):
    p = run(*args, check=False)
    assert p.returncode == 1, (args, p.returncode, p.stderr)
    line = p.stderr.strip()
    assert "\n" not in line and "panicked" not in line, line
    for n in needles:
        assert n in line, (n, line)


def test_bad_training_input_is_one_line_and_writes_no_run(run, home, tmp_path, tiny, text_data):
    base = ["train", "--model", str(tiny), "--data", str(text_data)]
    expect_user_error(run, [*base, "--set", "lora.rank=4"], "unknown setting `lora.rank`")
    expect_user_error(run, [*base, "--set", "lr=fast"], "`lr`", "fast")
    expect_user_error(run, [*base, "--method", "qlora-ish"], "unknown method")
    expect_user_error(run, [*base, "--method", "freeze", "--set", "freeze.trainable_layers=9"],
                      "freeze.trainable_layers", "2 layers")
    expect_user_error(run, [*base, "--set", "seq_len=8"], str(text_data), "line 1", "seq_len")
    expect_user_error(run, [*base, "--method", "bitfit"], "bitfit", "llama model has none")
    toml = tmp_path / "run.toml"
    toml.write_text("batch = 4\n")
    expect_user_error(run, [*base, "--config", str(toml)], "run.toml", "unknown setting `batch`")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n')
    expect_user_error(run, ["train", "--model", str(tiny), "--data", str(bad)], "bad.jsonl", "line 2")
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    expect_user_error(run, ["train", "--model", str(tiny), "--data", str(missing)], "line 2", "output")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    expect_user_error(run, ["train", "--model", str(tiny), "--data", str(empty)], "empty.jsonl", "no records")
    db = sqlite3.connect(home / "whetstone.db")
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_datasets_add_list_show(run, run_json, tmp_path, tiny):
    f = tmp_path / "qa.jsonl"
    f.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
                 '{"messages": [{"role": "user", "content": "bye"}]}\n'
                 '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}\n')
    expect_user_error(run, ["datasets", "add", str(f)], "line 2", "1 of 3 records")
    added = run_json("datasets", "add", str(f), "--drop-invalid")
    assert (added["format"], added["records"], added["dropped"], added["detected"]) == ("chat", 2, 1, True)
    assert run_json("datasets", "add", str(f), "--drop-invalid")["id"] == added["id"]
    listed = run_json("datasets", "list")
    assert [d["id"] for d in listed] == [added["id"]]
    # SmolLM-style ChatML template on the tiny model, so the preview shows trained spans
    cfg = json.loads((tiny / "tokenizer_config.json").read_text())
    cfg["chat_template"] = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    (tiny / "tokenizer_config.json").write_text(json.dumps(cfg))
    shown = run_json("datasets", "show", added["id"], "--model", str(tiny), "--seq-len", "8")
    assert len(shown["problems"]) == 1 and "line 2" in shown["problems"][0]
    assert shown["preview"][0]["rendered"].startswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n⟦hello")
    assert shown["stats"]["records"] == 2 and shown["stats"]["over_seq_len"] >= 1
    csv = tmp_path / "pairs.csv"
    csv.write_text("question,answer\nwhat?,that\nwho?,them\n")
    added = run_json("datasets", "add", str(csv), "--columns", "prompt=question,response=answer")
    assert (added["format"], added["records"]) == ("csv", 2)


def test_demo_lowers_eval_loss_and_learns_the_format(run, home, demo_model):
    models = home / "models"
    models.mkdir(parents=True)
    (models / demo_model.name).symlink_to(demo_model)
    p = run("demo", "--steps", "4", "--json", timeout=900)
    out = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    summary = out[-1]
    assert summary["event"] == "demo"
    before, after = summary["eval_loss_before"], summary["eval_loss_after"]
    assert after < 0.7 * before, (before, after)
    assert json.loads(summary["generation_after"]) == {"name": "Ingrid Solberg", "age": 29, "city": "Bergen"}
    exported = Path(summary["peft_export"])
    assert exported.parent == (home / "exports").resolve()
    assert json.loads((exported / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert json.loads((exported / "manifest.json").read_text())["run_id"] == summary["run_id"]
    # base vs tuned answers to held-out prompts: JSON answers get the JSON metrics
    task = {m["metric"]: m for m in summary["task_metrics"]}
    assert summary["task_records"] == 10 and list(task) == ["json_valid", "json_fields", "exact_match"]
    assert all(0 <= m[k] <= 1 for m in task.values() for k in ("base", "tuned"))
    assert task["exact_match"]["tuned"] > task["exact_match"]["base"], task


def test_another_client_pauses_a_run_then_resume_continues_it_exactly(run, run_json, home, whetstone_bin, tiny,
                                                                       text_data):
    args = ["train", "--model", str(tiny), "--data", str(text_data), *TRAIN_ARGS]
    reference = step_losses(events(run(*args).stdout))
    env = dict(os.environ, WHETSTONE_HOME=str(home))
    p = subprocess.Popen([whetstone_bin, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, run_id, asked = [], None, None
    deadline = time.time() + 120
    for line in p.stdout:
        e = json.loads(line)
        seen.append(e)
        run_id = e.get("run_id", run_id)
        if e["event"] == "step" and asked is None:
            asked = run_json("runs", "pause", run_id)
        assert time.time() < deadline, "the run did not stop"
    p.wait(timeout=60)
    assert p.returncode == 0, p.stderr.read()
    assert asked["status"] == "running"
    shown = run_json("runs", "show", run_id)
    print(f"paused at step {shown['steps_done']} of 240")
    assert shown["status"] == "paused" and 0 < shown["steps_done"] < 240, shown
    r = run("runs", "pause", run_id, check=False)
    assert r.returncode == 0  # a paused run can be asked again; it stays paused
    resumed = events(run("resume", run_id, "--json").stdout)
    stop = resumed[0]["resumed_from"]
    joined = [s for s in step_losses(seen) if s[0] <= stop] + step_losses(resumed)
    assert joined == reference, "losses after pause + resume differ from the uninterrupted run"
    assert run_json("runs", "show", run_id)["status"] == "completed"
    r = run("runs", "stop", run_id, check=False)
    assert r.returncode == 1 and "is completed: there is nothing to stop" in r.stderr

    run("runs", "tag", run_id, "paused-once", "tiny")
    run("runs", "untag", run_id, "tiny")
    v = run_json("runs", "note", run_id, "  paused after one step  ")
    assert v["tags"] == ["paused-once"] and v["notes"] == "paused after one step"
    assert [x["tags"] for x in run_json("runs", "list") if x["id"] == run_id] == [["paused-once"]]
    r = run("runs", "tag", run_id, "a,b", check=False)
    assert r.returncode == 1 and "without commas" in r.stderr


def test_queued_runs_train_one_at_a_time_and_ctrl_c_stops_the_queue(run, run_json, home, whetstone_bin, tiny,
                                                                    text_data):
    out = events(run("train", "--model", str(tiny), "--data", str(text_data), "--method", "lora,ia3",
                     "--set", "max_steps=3", "--set", "sample_tokens=0", "--json").stdout)
    assert [(e["run_id"], e["position"]) for e in out if e["event"] == "queued"] == [("run-1", 0), ("run-2", 1)]
    order = [e["run_id"] for e in out if e["event"] != "queued"]
    assert order == sorted(order), "the second run started before the first finished"
    assert [e["run_id"] for e in out if e["event"] == "finished"] == ["run-1", "run-2"]

    env = dict(os.environ, WHETSTONE_HOME=str(home))
    args = ["train", "--model", str(tiny), "--data", str(text_data), "--method", "lora,ia3", *TRAIN_ARGS[2:]]
    p = subprocess.Popen([whetstone_bin, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, sent = time.time() + 120, False
    for line in p.stdout:
        e = json.loads(line)
        if e["event"] == "step" and not sent:
            p.send_signal(signal.SIGINT)
            sent = True
        assert time.time() < deadline
    p.wait(timeout=60)
    runs = {r["id"]: r for r in run_json("runs", "list")}
    assert runs["run-3"]["status"] == "cancelled" and 0 < runs["run-3"]["steps_done"] < 240
    assert runs["run-4"]["status"] == "cancelled" and runs["run-4"]["steps_done"] == 0
    # a run stopped while waiting starts from the beginning when resumed, forgetting what an
    # attempt stopped just as it began had logged (made certain here: the race is rare)
    with sqlite3.connect(home / "whetstone.db") as db:
        db.execute("INSERT OR IGNORE INTO run_events (run_id, seq, step, kind, payload) "
                   "VALUES ('run-4', 1, 0, 'log', '{}')")
    resumed = events(run("resume", "run-4", "--json").stdout)
    assert resumed[0]["event"] == "started" and resumed[0].get("resumed_from") is None
    assert resumed[-1]["status"] == "completed"


def test_a_full_or_read_only_disk_is_a_clear_error_and_loses_nothing(tmp_path, whetstone_bin, tiny, text_data):
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True, timeout=30)
    try:
        home = mnt / "home"
        env = dict(os.environ, WHETSTONE_HOME=str(home))

        def go(*args):
            return subprocess.run([whetstone_bin, *args], env=env, capture_output=True, text=True, timeout=300)

        assert go("datasets", "add", str(text_data)).returncode == 0
        st = os.statvfs(mnt)
        (mnt / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 400_000))
        p = go("train", "--model", str(tiny), "--data", "corpus", "--method", "full", "--set", "max_steps=4",
               "--set", "save_every=1", "--set", "sample_tokens=0")
        assert p.returncode == 1, p.stderr
        assert "No space left on device" in p.stderr and str(home / "runs") in p.stderr
        last = p.stderr.strip().splitlines()[-1]  # after the run's own header lines, one error line
        assert last.startswith("error: ") and "No space left on device" in last, p.stderr
        db = sqlite3.connect(home / "whetstone.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        status, error = db.execute("SELECT status, error FROM runs").fetchone()
        db.close()
        assert status == "failed" and "No space left on device" in error
        assert not [q for q in home.rglob("*") if q.name.endswith((".tmp", ".old"))]
        # with room again the same command works
        (mnt / "filler").unlink()
        p = go("train", "--model", str(tiny), "--data", "corpus", "--method", "full", "--set", "max_steps=4",
               "--set", "save_every=1", "--set", "sample_tokens=0")
        assert p.returncode == 0, p.stderr
        # a read-only data directory: every command says so in one line, nothing changes
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, timeout=30)
        for args in (["runs", "list"], ["train", "--model", str(tiny), "--data", "corpus"]):
            p = go(*args)
            assert p.returncode == 1 and "Read-only file system" in p.stderr and str(home) in p.stderr, p.stderr
            assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    finally:
        subprocess.run(["umount", str(mnt)], timeout=30)


def test_models_register_in_place_unless_a_copy_is_asked_for(run_json, home, tmp_path, tiny):
    in_place = run_json("models", "add", str(tiny))
    assert Path(in_place["path"]) == tiny.resolve()
    other = tmp_path / "elsewhere"
    import shutil
    shutil.copytree(tiny, other)
    copied = run_json("models", "add", str(other), "--copy")
    path = Path(copied["path"])
    assert path.parent == (home / "models" / "local").resolve() and copied["id"] != in_place["id"]
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in other.iterdir())
    shutil.rmtree(other)  # the copy does not depend on the original
    f = tmp_path / "t.txt"
    f.write_text("The quick brown fox jumps over the lazy dog.")
    assert run_json("score", "--model", copied["id"], "--text-file", str(f))["tokens"] > 3
    assert not list((home / "models" / "local").glob(".copying-*"))
