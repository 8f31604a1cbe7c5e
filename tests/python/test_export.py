"""Exports, each checked by the tool that consumes it: PEFT adapters and merged folders in
transformers + PEFT, GGUF files with the `gguf` reader (and our GGUF loader, itself checked
against transformers), Ollama Modelfiles by their contents; PEFT-made adapters imported."""
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open

import tiny_models as tm
from test_train import events, text_data, tiny  # noqa: F401  (fixtures)

SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "samples" / "extract.jsonl"


def train(run, model, data, method, *sets):
    args = ["train", "--model", str(model), "--data", str(data), "--method", method,
            "--set", "sample_tokens=0", "--json"]
    for s in sets:
        args += ["--set", s]
    return events(run(*args, timeout=900).stdout)[-1]["run_id"]


def export(run, run_id, fmt, *extra):
    return json.loads(run("export", run_id, "--format", fmt, *extra, "--json", timeout=900).stdout)


def score(run, model, text_file, adapter=None):
    args = ["score", "--model", str(model), "--text-file", str(text_file), "--json"]
    if adapter:
        args += ["--adapter", str(adapter)]
    return json.loads(run(*args).stdout)


def check_manifest(report, method):
    folder = Path(report["path"])
    m = json.loads((folder / "manifest.json").read_text())
    assert m["run_id"] == report["run_id"] and m["method"] == method and m["format"] == report["format"]
    assert len(m["base_model"]["sha256"]) == 64 and m["config"]["method"] == method
    names = {f["name"] for f in m["files"]}
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    assert names == on_disk
    for f in m["files"]:
        data = (folder / f["name"]).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"], f["name"]
    return folder


def max_diff(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.mark.parametrize("method,sets", [
    ("lora", ["lora.targets=q_proj,k_proj,v_proj,down_proj", "lora.rslora=true"]),
    ("dora", ["lora.targets=q_proj,k_proj,o_proj,up_proj"]),
    ("ia3", ["lr=5e-2", "ia3.targets=k_proj,v_proj,down_proj"]),
])
def test_peft_and_merged_exports_load_in_transformers_with_the_same_nll(run, tmp_path, tiny, text_data, method, sets):
    run_id = train(run, tiny, text_data, method, "max_steps=5", "lr=1e-2", *sets)
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    ours = score(run, tiny, text, run_id)
    base = score(run, tiny, text)
    assert max_diff(ours["token_nll"], base["token_nll"]) > 1e-3, "the adapter changed nothing"

    peft_dir = check_manifest(export(run, run_id, "peft"), method)
    assert (peft_dir / "README.md").read_text().startswith("---\nbase_model:")
    with safe_open(peft_dir / "adapter_model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
    peft_model = PeftModel.from_pretrained(tm.load_reference(tiny), peft_dir)
    peft_model.eval()
    d = max_diff(ours["token_nll"], tm.token_nll(peft_model, ours["token_ids"]))
    print(f"{method}: PEFT export in PeftModel vs whetstone {d:.2e}")
    assert d < 1e-3, f"PEFT export: {d}"

    merged = check_manifest(export(run, run_id, "merged", "--dtype", "f32", "--out", str(tmp_path / "merged")), method)
    ref = tm.load_reference(merged)
    d = max_diff(ours["token_nll"], tm.token_nll(ref, ours["token_ids"]))
    print(f"{method}: merged folder in transformers vs whetstone {d:.2e}")
    assert d < 1e-3, f"merged folder in transformers: {d}"
    d = max_diff(ours["token_nll"], score(run, merged, text)["token_nll"])
    assert d < 1e-4, f"merged folder in whetstone: {d}"


def test_a_peft_made_lora_with_rank_and_alpha_patterns_imports(run, tmp_path, tiny):
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                     rank_pattern={"down_proj": 2}, alpha_pattern={"v_proj": 16}, task_type="CAUSAL_LM")
    peft_model = get_peft_model(tm.load_reference(tiny), cfg)
    tm.randomize_adapter(peft_model, seed=3, scale=0.3)
    adapter = tmp_path / "made-by-peft"
    peft_model.save_pretrained(adapter)
    peft_model.eval()
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    ours = score(run, tiny, text, adapter)
    d = max_diff(ours["token_nll"], tm.token_nll(peft_model, ours["token_ids"]))
    assert d < 1e-3, d
    assert max_diff(ours["token_nll"], score(run, tiny, text)["token_nll"]) > 1e-2


def llama_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf.py permutation of Q/K rows, written from its formula."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_gguf_adapter_has_llama_cpp_names_layout_and_alpha(run, home, tiny, text_data):
    run_id = train(run, tiny, text_data, "lora", "max_steps=3", "lr=1e-2", "lora.r=4", "lora.alpha=8",
                   "lora.rslora=true", "lora.targets=all-linear")
    report = export(run, run_id, "gguf")
    assert report["kind"] == "gguf_adapter"
    folder = check_manifest(report, "lora")
    reader = GGUFReader(folder / "adapter.gguf")
    field = lambda k: reader.fields[k]  # noqa: E731
    text = lambda k: bytes(field(k).parts[field(k).data[0]]).decode()  # noqa: E731
    assert text("general.type") == "adapter" and text("adapter.type") == "lora"
    assert text("general.architecture") == "llama"
    alpha = field("adapter.lora.alpha")
    assert alpha.types[0].name == "FLOAT32"
    assert abs(float(alpha.parts[alpha.data[0]][0]) - 8 * 2.0) < 1e-6  # rsLoRA: alpha·√r
    tensors = {t.name: t for t in reader.tensors}
    gg = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
          "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
    hf_cfg = json.loads((tiny / "config.json").read_text())
    want = {f"blk.{i}.{g}.weight.lora_{ab}" for i in range(hf_cfg["num_hidden_layers"]) for g in gg.values()
            for ab in "ab"}
    assert set(tensors) == want
    ckpt = home / "runs" / run_id / "checkpoints" / "last"
    with safe_open(ckpt / "adapter_model.safetensors", "np") as f:
        for i in range(hf_cfg["num_hidden_layers"]):
            for hf, g in gg.items():
                mod = "self_attn" if hf in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
                a = f.get_tensor(f"base_model.model.model.layers.{i}.{mod}.{hf}.lora_A.weight")
                b = f.get_tensor(f"base_model.model.model.layers.{i}.{mod}.{hf}.lora_B.weight")
                ta, tb = tensors[f"blk.{i}.{g}.weight.lora_a"], tensors[f"blk.{i}.{g}.weight.lora_b"]
                # GGUF lists dims fastest-first: lora_a is ne = [in, r], lora_b ne = [r, out]
                assert list(ta.shape) == [a.shape[1], a.shape[0]] and list(tb.shape) == [b.shape[1], b.shape[0]]
                if hf == "q_proj":
                    b = llama_permute(b, hf_cfg["num_attention_heads"])
                elif hf == "k_proj":
                    b = llama_permute(b, hf_cfg["num_key_value_heads"])
                assert np.array_equal(np.asarray(ta.data).reshape(a.shape), a)
                assert np.array_equal(np.asarray(tb.data).reshape(b.shape), b), (i, hf)


def test_bad_exports_are_one_line_errors(run, tiny, text_data):
    pt = train(run, tiny, text_data, "prompt_tuning", "max_steps=1")
    for fmt in ("merged", "gguf", "ollama"):
        r = run("export", pt, "--format", fmt, check=False)
        assert r.returncode == 1 and "prompt tuning adds virtual tokens" in r.stderr, r.stderr
    full = train(run, tiny, text_data, "full", "max_steps=1")
    r = run("export", full, "--format", "peft", check=False)
    assert r.returncode == 1 and "--format merged" in r.stderr
    for args, needle in [(["run-999", "--format", "peft"], "no run `run-999`"),
                         ([full, "--format", "zip"], "not one of peft"),
                         ([full, "--format", "merged", "--dtype", "int4"], "--dtype"),
                         ([full, "--format", "merged", "--checkpoint", "step-3"], "--checkpoint"),
                         # the Ollama folder of an HF base with a BPE tokenizer holds a GGUF: no bf16
                         ([full, "--format", "ollama", "--dtype", "bf16"], "for a GGUF file"),
                         ([full, "--format", "merged", "--out", str(tiny)], "not an earlier Whetstone export")]:
        r = run("export", *args, check=False)
        assert r.returncode == 1 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_one_loaded_base_answers_with_several_adapters(run, tiny, text_data):
    a = train(run, tiny, text_data, "lora", "max_steps=3", "lr=5e-2")
    b = train(run, tiny, text_data, "ia3", "max_steps=3", "lr=1e-1")
    common = ["--model", str(tiny), "--raw", "--temperature", "0", "--repetition-penalty", "1",
              "--max-tokens", "8", "--json", "The quick brown"]
    both = json.loads(run("chat", "--adapter", "base", "--adapter", a, "--adapter", b, *common).stdout)
    assert [x["adapter"] for x in both["answers"]] == ["base", a, b]
    for ans in both["answers"]:
        alone = ["--adapter", ans["adapter"]] if ans["adapter"] != "base" else []
        single = json.loads(run("chat", *alone, *common).stdout)
        assert single["token_ids"] == ans["token_ids"], ans["adapter"]
        assert ans["switch_s"] < 5
    assert both["answers"][1]["token_ids"] != both["answers"][0]["token_ids"] or \
        both["answers"][2]["token_ids"] != both["answers"][0]["token_ids"]


@pytest.fixture(scope="module")
def smol_runs(tmp_path_factory, whetstone_bin, demo_model):
    """Two short runs on the real SmolLM2 GGUF (LoRA and (IA)3), shared by the tests below."""
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "WHETSTONE_HOME": str(home)}

    def go(*args):
        r = subprocess.run([whetstone_bin, *args], env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr
        return r.stdout

    common = ["--model", str(demo_model), "--data", str(SAMPLE), "--set", "max_steps=2", "--set", "batch_size=2",
              "--set", "seq_len=128", "--set", "eval_fraction=0.02", "--set", "sample_tokens=0", "--json"]
    runs = {}
    for method, extra in [("lora", ["--set", "lr=2e-3"]), ("ia3", ["--set", "lr=5e-2"])]:
        runs[method] = events(go("train", "--method", method, *common, *extra))[-1]["run_id"]
    return home, env, go, runs


def test_ollama_folder_for_a_lora_run_on_a_gguf_base(smol_runs, demo_model):
    home, env, go, runs = smol_runs
    report = json.loads(go("export", runs["lora"], "--format", "ollama", "--json"))
    assert report["kind"] == "ollama_adapter" and report["next_step"].startswith("ollama create ")
    folder = check_manifest(report, "lora")
    lines = (folder / "Modelfile").read_text().splitlines()
    assert f"FROM {Path(demo_model).resolve()}" in lines and "ADAPTER ./adapter.gguf" in lines
    text = (folder / "Modelfile").read_text()
    assert 'TEMPLATE """{{ if .System }}<|im_start|>system' in text
    assert 'PARAMETER stop "<|im_end|>"' in lines
    reader = GGUFReader(folder / "adapter.gguf")
    names = {t.name for t in reader.tensors}
    assert "blk.29.attn_q.weight.lora_a" in names and len(names) == 30 * 4 * 2  # default q,k,v,o


def test_merged_gguf_and_hf_folder_from_a_gguf_base_score_like_the_adapter(smol_runs, demo_model, tmp_path):
    home, env, go, runs = smol_runs
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    ours = json.loads(go("score", "--model", str(demo_model), "--adapter", runs["ia3"], "--text-file", str(text),
                         "--json"))

    report = json.loads(go("export", runs["ia3"], "--format", "gguf", "--dtype", "f32", "--json"))
    assert report["kind"] == "gguf_model"
    folder = check_manifest(report, "ia3")
    base, out = GGUFReader(demo_model), GGUFReader(folder / "model.gguf")
    assert [t.name for t in out.tensors] == [t.name for t in base.tensors]
    assert {t.tensor_type.name for t in out.tensors} == {"F32"}
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template", "llama.block_count"):
        assert key in out.fields, key
    merged = json.loads(go("score", "--model", str(folder / "model.gguf"), "--text-file", str(text), "--json"))
    assert merged["token_ids"] == ours["token_ids"]
    d = max_diff(merged["token_nll"], ours["token_nll"])
    assert d < 1e-3, f"merged f32 GGUF: {d}"

    q8 = json.loads(go("export", runs["ia3"], "--format", "gguf", "--dtype", "q8_0", "--out",
                       str(tmp_path / "q8"), "--json"))
    size = {f["name"]: f["bytes"] for f in q8["files"]}["model.gguf"]
    assert size < Path(demo_model).stat().st_size * 2
    q8s = json.loads(go("score", "--model", str(tmp_path / "q8" / "model.gguf"), "--text-file", str(text), "--json"))
    assert abs(q8s["mean_nll"] - ours["mean_nll"]) < 0.05

    # the HF folder made from a GGUF base: config, tokenizer and weights all load in transformers
    hf = tmp_path / "hf"
    check_manifest(json.loads(go("export", runs["ia3"], "--format", "merged", "--dtype", "f32", "--out", str(hf),
                                 "--json")), "ia3")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(hf)
    assert tok(tm.TEXT)["input_ids"] == ours["token_ids"]
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    d = max_diff(ours["token_nll"], tm.token_nll(tm.load_reference(hf), ours["token_ids"]))
    assert d < 1e-3, f"merged HF folder in transformers: {d}"


def llama_cpp_nll(model, ids, lora=None, n_ctx=256):
    """Per-token NLL from llama.cpp itself (f32 KV cache, so an f32 model computes exactly)."""
    from llama_cpp import Llama
    llm = Llama(model_path=str(model), lora_path=str(lora) if lora else None, logits_all=True, n_ctx=n_ctx,
                n_threads=2, type_k=0, type_v=0, verbose=False)
    llm.eval(ids)
    logits = np.array(llm.scores[:len(ids)], dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return [-logp[i, ids[i + 1]] for i in range(len(ids) - 1)]


def test_llama_cpp_loads_the_exports_and_computes_the_same_nll(smol_runs, tmp_path):
    """An f32 merged model (the (IA)3 run) as the base, the LoRA run's GGUF adapter on top: llama.cpp
    and Whetstone must agree per token, with and without the adapter."""
    home, env, go, runs = smol_runs
    go("export", runs["ia3"], "--format", "gguf", "--dtype", "f32", "--out", str(tmp_path / "base"))
    go("export", runs["lora"], "--format", "gguf", "--out", str(tmp_path / "lora"))
    base, adapter = tmp_path / "base" / "model.gguf", tmp_path / "lora" / "adapter.gguf"
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    plain = json.loads(go("score", "--model", str(base), "--text-file", str(text), "--json"))
    tuned = json.loads(go("score", "--model", str(base), "--adapter", runs["lora"], "--text-file", str(text),
                          "--json"))
    assert max_diff(plain["token_nll"], tuned["token_nll"]) > 0.05, "the adapter changed nothing"
    d = max_diff(plain["token_nll"], llama_cpp_nll(base, plain["token_ids"]))
    assert d < 1e-3, f"merged f32 GGUF in llama.cpp: {d}"
    d2 = max_diff(tuned["token_nll"], llama_cpp_nll(base, tuned["token_ids"], adapter))
    print(f"llama.cpp vs whetstone: f32 merged model {d:.2e}, with the GGUF LoRA adapter {d2:.2e}")
    assert d2 < 1e-3, f"GGUF adapter in llama.cpp: {d2}"


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_gguf_model_from_an_hf_folder_loads_in_llama_cpp(run, tmp_path, text_data, family):
    """No GGUF base: metadata from config.json, the tokenizer from tokenizer.json. llama.cpp's own
    tokenizer must give transformers' ids, and its NLL must match (Llama: Q/K permuted; Qwen2: biases)."""
    model = tm.make_model(tmp_path / family, family, seed=5)
    run_id = train(run, model, text_data, "dora", "max_steps=3", "lr=1e-2", "lora.targets=all-linear")
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    ours = score(run, model, text, run_id)
    report = export(run, run_id, "gguf", "--dtype", "f32", "--out", str(tmp_path / "gguf"))
    assert report["kind"] == "gguf_model"
    gguf_file = check_manifest(report, "dora") / "model.gguf"
    again = score(run, gguf_file, text)
    assert again["token_ids"] == ours["token_ids"]
    assert max_diff(again["token_nll"], ours["token_nll"]) < 1e-4
    from llama_cpp import Llama
    llm = Llama(model_path=str(gguf_file), vocab_only=True, verbose=False)
    assert llm.tokenize(tm.TEXT.encode(), add_bos=False, special=False) == ours["token_ids"]
    d = max_diff(ours["token_nll"], llama_cpp_nll(gguf_file, ours["token_ids"]))
    print(f"{family} GGUF from an HF folder: llama.cpp vs whetstone max per-token NLL difference {d:.2e}")
    assert d < 1e-3, f"{family} GGUF from an HF folder in llama.cpp: {d}"
    # Ollama gets the same merged GGUF (f16) rather than a folder it would have to convert
    report = export(run, run_id, "ollama", "--out", str(tmp_path / "ollama"))
    assert report["kind"] == "ollama_model"
    modelfile = (check_manifest(report, "dora") / "Modelfile").read_text().splitlines()
    assert "FROM ./model.gguf" in modelfile and not any(line.startswith("ADAPTER") for line in modelfile)


def test_a_killed_export_leaves_no_partial_folder(smol_runs, whetstone_bin, tmp_path):
    home, env, go, runs = smol_runs
    dest = tmp_path / "exports" / "merged"
    proc = subprocess.Popen([whetstone_bin, "export", runs["ia3"], "--format", "merged", "--dtype", "f32",
                             "--out", str(dest)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, staged = time.time() + 120, []
    while time.time() < deadline and not staged and proc.poll() is None:
        staged = [p for p in dest.parent.glob(".merged.partial-*") if any(p.iterdir())] if dest.parent.exists() else []
        time.sleep(0.05)
    assert staged, "the export finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not dest.exists(), "a partial export is visible under the destination name"
    # the next export sweeps the dead process's staging folder and completes
    go("export", runs["ia3"], "--format", "merged", "--dtype", "f16", "--out", str(dest))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["merged"]
    assert (dest / "manifest.json").exists() and (dest / "model.safetensors").exists()
