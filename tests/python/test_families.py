"""Today's families end to end: Qwen3 (per-head q/k norms), SmolLM3 (layers without rope),
Gemma 2 / Gemma 3 (sandwich norms, GeGLU, soft-capping, two ropes), Phi-3 (fused qkv and gate_up,
partial rotary, LongRoPE) and sliding-window layers (Mistral, Qwen2/3, SmolLM3, Gemma, Phi-3)
train, and their exports load in the tools that consume them with the NLL Whetstone computes:
PEFT adapters in PeftModel, merged folders in transformers, GGUF models and GGUF LoRA adapters in
llama.cpp. Where a GGUF would compute something else (llama.cpp's graph has no sliding window for
that architecture, or its own query scale), the export is refused with the reason.

Scoring each family against transformers is in test_models.py."""
import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

import tiny_models as tm
from test_export import check_manifest, export, llama_cpp_nll, max_diff, score, train
from test_train import text_data  # noqa: F401  (fixture)

FAMILIES = {
    "qwen3": dict(family="qwen3"),
    # four layers: llama.cpp's smollm3 graph leaves every fourth without rope, as the real models do
    "smollm3": dict(family="smollm3", num_hidden_layers=4, no_rope_layer_interval=4),
    "mistral-sliding-window": dict(family="mistral", sliding_window=7),
    # llama.cpp scales Gemma's queries by 1/sqrt(head_dim) whatever the file says
    "gemma2": dict(family="gemma2", query_pre_attn_scalar=16),
    "gemma3": dict(family="gemma3", query_pre_attn_scalar=16),
    "gemma2-own-query-scale": dict(family="gemma2"),
    # fused qkv_proj / gate_up_proj (LoRA on the fused modules, as PEFT puts it), LongRoPE with
    # an attention factor, partial rotary
    "phi3": dict(family="phi3", **tm.PHI3_LONGROPE),
    # the short LongRoPE factors: llama.cpp takes them when its context (rounded up to 256) is
    # within the original length, transformers when the sequence is; both hold for this text
    "phi3-short-factors": dict(family="phi3", **{**tm.PHI3_LONGROPE, "original_max_position_embeddings": 256,
                                                   "max_position_embeddings": 1024}),
    # llama.cpp switches Phi-3's window off, so a window shorter than the context is refused
    "phi3-sliding-window": dict(family="phi3", sliding_window=7),
}

# why a GGUF export of the family is refused (one line naming the reason), where it is
GGUF_REFUSED = {"mistral-sliding-window": "sliding_window", "gemma2-own-query-scale": "query_pre_attn_scalar",
                "phi3-sliding-window": "sliding_window"}

# ggml computes GELU through an f16 lookup table (input rounded to f16, result stored as f16), so
# llama.cpp's Gemma differs from the exact function by a few 1e-3 nats: bench/gemma_gelu_table.py
# measured 1.3e-3 (Gemma 2) and 2.0e-3 (Gemma 3) against transformers, 8.7e-4 and 2.6e-4 against
# transformers with that table; a misread setting moves the NLL by a nat or more
GGUF_TOL = {"gemma2": 1e-2, "gemma3": 1e-2}


def nll_text(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    return text


@pytest.mark.parametrize("variant", sorted(FAMILIES))
def test_lora_trains_and_its_peft_merged_and_gguf_exports_agree(run, tmp_path, text_data, variant):
    model = tm.make_model(tmp_path / variant, seed=3, **FAMILIES[variant])
    run_id = lora_id = train(run, model, text_data, "lora", "max_steps=4", "lr=1e-2", "lora.targets=all-linear")
    text = nll_text(tmp_path)
    ours = score(run, model, text, run_id)
    base = score(run, model, text)
    assert max_diff(ours["token_nll"], base["token_nll"]) > 1e-3, "the adapter changed nothing"

    peft_dir = check_manifest(export(run, run_id, "peft"), "lora")
    peft_model = PeftModel.from_pretrained(tm.load_reference(model), peft_dir).eval()
    d = max_diff(ours["token_nll"], tm.token_nll(peft_model, ours["token_ids"]))
    print(f"{variant}: PEFT export in PeftModel vs whetstone {d:.2e}")
    assert d < 1e-3, f"{variant} PEFT export: {d}"

    merged = check_manifest(export(run, run_id, "merged", "--dtype", "f32", "--out", str(tmp_path / "merged")),
                            "lora")
    d = max_diff(ours["token_nll"], tm.token_nll(tm.load_reference(merged), ours["token_ids"]))
    print(f"{variant}: merged folder in transformers vs whetstone {d:.2e}")
    assert d < 1e-3, f"{variant} merged folder: {d}"

    if variant in GGUF_REFUSED:
        p = run("export", run_id, "--format", "gguf", "--out", str(tmp_path / "gguf"), check=False)
        assert p.returncode == 1 and GGUF_REFUSED[variant] in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "gguf").exists()
        return
    # a merged GGUF model (DoRA exports as one) from the HF folder, in llama.cpp itself
    run_id = train(run, model, text_data, "dora", "max_steps=3", "lr=1e-2", "lora.targets=all-linear")
    ours = score(run, model, text, run_id)
    report = export(run, run_id, "gguf", "--dtype", "f32", "--out", str(tmp_path / "gguf"))
    assert report["kind"] == "gguf_model"
    gguf_file = check_manifest(report, "dora") / "model.gguf"
    again = score(run, gguf_file, text)
    assert again["token_ids"] == ours["token_ids"]
    assert max_diff(again["token_nll"], ours["token_nll"]) < 1e-4
    d = max_diff(ours["token_nll"], llama_cpp_nll(gguf_file, ours["token_ids"]))
    print(f"{variant}: merged GGUF in llama.cpp vs whetstone {d:.2e}")
    assert d < GGUF_TOL.get(variant, 1e-3), f"{variant} GGUF in llama.cpp: {d}"

    # the LoRA run's GGUF adapter (on the fused modules for Phi-3) over that GGUF, in llama.cpp
    adapter = check_manifest(export(run, lora_id, "gguf", "--out", str(tmp_path / "adapter")), "lora")
    tuned = score(run, gguf_file, text, lora_id)
    assert max_diff(tuned["token_nll"], again["token_nll"]) > 1e-3, "the adapter changed nothing"
    d = max_diff(tuned["token_nll"], llama_cpp_nll(gguf_file, tuned["token_ids"], adapter / "adapter.gguf"))
    print(f"{variant}: GGUF LoRA adapter in llama.cpp vs whetstone {d:.2e}")
    assert d < GGUF_TOL.get(variant, 1e-3), f"{variant} GGUF adapter in llama.cpp: {d}"


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_full_fine_tune_trains_the_head_norms_and_merges(run, tmp_path, text_data, family):
    model = tm.make_model(tmp_path / family, seed=4, family=family)
    run_id = train(run, model, text_data, "full", "max_steps=3", "lr=1e-3")
    text = nll_text(tmp_path)
    ours = score(run, model, text, run_id)
    merged = check_manifest(export(run, run_id, "merged", "--dtype", "f32", "--out", str(tmp_path / "merged")),
                            "full")
    before = load_file(str(model / "model.safetensors"))
    after = load_file(str(merged / "model.safetensors"))
    names = ["model.layers.0.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight"]
    if family == "gemma3":
        names += ["model.layers.0.pre_feedforward_layernorm.weight", "model.layers.1.post_feedforward_layernorm.weight"]
    for name in names:
        assert not torch.equal(before[name], after[name]), f"{name} did not train"
    d = max_diff(ours["token_nll"], tm.token_nll(tm.load_reference(merged), ours["token_ids"]))
    assert d < 1e-3, f"{family} full fine-tune, merged: {d}"


GRADIENT_VARIANTS = {
    "qwen3": dict(family="qwen3"),
    "smollm3-sliding": dict(family="smollm3", use_sliding_window=True, sliding_window=5, no_rope_layer_interval=2),
    "gemma2": dict(family="gemma2"),
    "gemma3": dict(family="gemma3"),
    "phi3": dict(family="phi3", **tm.PHI3_LONGROPE),
}


@pytest.mark.parametrize("variant", sorted(GRADIENT_VARIANTS))
def test_lora_gradients_match_peft_on_new_families(run, tmp_path, text_data, variant):
    spec = GRADIENT_VARIANTS[variant]
    model = tm.make_model(tmp_path / variant, seed=6, **spec)
    ref = tm.load_reference(model)
    adapter = tmp_path / "adapter"
    peft_model = tm.random_lora(ref, adapter)
    dump = tmp_path / "grads.safetensors"
    run("train", "--model", str(model), "--data", str(text_data), "--method", "lora",
        "--set", f"lora.init={adapter}", "--set", "lora.r=4", "--set", "lora.alpha=8",
        "--set", "lora.dropout=0", "--set", "lora.targets=all-linear",
        "--set", "batch_size=4", "--set", "eval_fraction=0", "--dump-first-grads", str(dump))
    checked, worst, _ = tm.compare_peft_gradients(peft_model, load_file(str(dump)), ref.config.vocab_size)
    print(f"{variant}: {checked} LoRA gradients vs PEFT, worst relative difference {worst:.2e}")
    linears = 4 if variant == "phi3" else 7  # qkv_proj, o_proj, gate_up_proj, down_proj
    assert checked == 2 * linears * ref.config.num_hidden_layers and worst < 1e-4


def test_a_folder_with_an_unsupported_math_key_is_refused_by_name(run, tmp_path):
    model = tm.make_model(tmp_path / "q", seed=1, family="qwen3")
    text = nll_text(tmp_path)
    config = json.loads((model / "config.json").read_text())
    for key, value, shown in [("layer_types", ["full_attention", "chunked_attention"], "layer_types[1]"),
                              ("final_logit_softcapping", 30.0, "final_logit_softcapping"),
                              ("model_type", "phimoe", "phimoe")]:
        (model / "config.json").write_text(json.dumps({**config, key: value}))
        p = run("score", "--model", str(model), "--text-file", str(text), check=False)
        assert p.returncode == 1 and shown in p.stderr and "config.json" in p.stderr, p.stderr
