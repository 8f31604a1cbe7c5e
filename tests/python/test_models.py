"""Models: loading and running them exactly, with transformers as the oracle.

- random tiny Llama / Qwen2 / Qwen3 / Mistral / SmolLM3 folders (f32, bf16, sharded, Llama-3
  rope scaling, sliding windows, layers without rope, per-head q/k norms):
  per-token NLL within 1e-3 and the same 32 greedy tokens;
- the real SmolLM2 GGUF against transformers' own GGUF loader;
- bad input: exit 1 with one line that names the file.
"""
import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

import tiny_models as tm

TOL = 1e-3


def score(run, model, tmp_path, text=tm.TEXT):
    f = tmp_path / "text.txt"
    f.write_text(text)
    return json.loads(run("score", "--model", str(model), "--text-file", str(f), "--json").stdout)


def greedy(run, model, prompt, n=32):
    out = run("chat", "--model", str(model), "--raw", "--temperature", "0", "--repetition-penalty", "1",
              "--max-tokens", str(n), "--json", prompt).stdout
    return json.loads(out)


VARIANTS = {
    "llama": dict(family="llama"),
    "llama-bf16-sharded": dict(family="llama", dtype=torch.bfloat16, shard=True),
    "llama3-rope-scaling": dict(family="llama", tie_word_embeddings=False, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}),
    "qwen2": dict(family="qwen2"),
    "mistral-sharded": dict(family="mistral", shard=True),
    "qwen3": dict(family="qwen3"),
    "qwen3-attention-bias": dict(family="qwen3", attention_bias=True),
    "smollm3": dict(family="smollm3"),
    # sliding windows much shorter than the text, so a window read wrong shows
    "mistral-sliding-window": dict(family="mistral", sliding_window=7),
    "qwen2-sliding-window": dict(family="qwen2", use_sliding_window=True, sliding_window=6, max_window_layers=1),
    "smollm3-sliding-window": dict(family="smollm3", use_sliding_window=True, sliding_window=5),
    "gemma2": dict(family="gemma2"),
    "gemma3": dict(family="gemma3"),
    "gemma3-rope-scaling": dict(family="gemma3", rope_scaling={"rope_type": "linear", "factor": 4.0}),
    "gemma3-bf16-sharded": dict(family="gemma3", dtype=torch.bfloat16, shard=True),
    "phi3": dict(family="phi3"),
    # Phi-4-mini's shape: half of each head rotated, LongRoPE past an original context of 32
    # (the text is longer, so its long factors and the attention factor apply)
    "phi3-longrope-partial-rotary": dict(family="phi3", **tm.PHI3_LONGROPE),
    "phi3-sliding-window": dict(family="phi3", sliding_window=7),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tiny_model_matches_transformers(run, tmp_path, variant):
    spec = dict(VARIANTS[variant])
    path = tm.make_model(tmp_path / variant, seed=len(variant), **spec)
    if spec.get("shard"):
        assert (path / "model.safetensors.index.json").exists()
    ref = tm.load_reference(path)
    tok = tm.PreTrainedTokenizerFast.from_pretrained(path)

    got = score(run, path, tmp_path)
    assert got["token_ids"] == tok(tm.TEXT)["input_ids"], "tokenization differs from transformers"
    want = tm.token_nll(ref, got["token_ids"])
    assert got["tokens"] == len(got["token_ids"]) and len(got["token_nll"]) == got["tokens"] - 1
    diff = max(abs(a - b) for a, b in zip(got["token_nll"], want))
    assert diff < TOL, f"{variant}: max |NLL - transformers| = {diff:.2e}"
    assert abs(got["mean_nll"] - sum(want) / len(want)) < TOL
    assert abs(got["perplexity"] - torch.tensor(got["mean_nll"]).exp().item()) < 1e-6 * got["perplexity"]
    # the logits are not flat (the test would be weak otherwise)
    assert max(want) - min(want) > 1.0

    g = greedy(run, path, "The quick brown")
    assert g["prompt_ids"] == tok("The quick brown")["input_ids"]
    assert len(g["token_ids"]) == 32
    tm.assert_greedy_agrees(tm.last_logits(ref), g["prompt_ids"], g["token_ids"], max_tokens=32)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transformers4"


def max_diff(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.mark.parametrize("variant", sorted(p.name for p in FIXTURES.iterdir()))
def test_a_folder_in_the_transformers4_or_5_form_gives_the_same_model(run, tmp_path, variant):
    """The committed folders were saved by transformers 4.57 (top-level rope_theta / rope_scaling,
    rope_local_base_freq) with the NLL it computed; the transformers under test saves the same
    model in its own form (transformers 5: everything rope under `rope_parameters`). Both forms
    must give 4.57's NLL, in Whetstone and in today's transformers."""
    old = FIXTURES / variant
    expected = json.loads((old / "expected.json").read_text())
    got = score(run, old, tmp_path, text=expected["text"])
    assert got["token_ids"] == expected["token_ids"]
    ref = tm.load_reference(old)
    assert max_diff(tm.token_nll(ref, got["token_ids"]), expected["token_nll"]) < TOL, "transformers moved"
    d_old = max_diff(got["token_nll"], expected["token_nll"])
    assert d_old < TOL, f"{variant}, 4.x form: {d_old:.2e}"

    new = tmp_path / "new"
    shutil.copytree(old, new)
    (new / "config.json").unlink()
    ref.save_pretrained(new)
    config = json.loads((new / "config.json").read_text())
    if tm.transformers.__version__.startswith("5."):
        assert "rope_parameters" in config and "rope_theta" not in config, config
    got = score(run, new, tmp_path, text=expected["text"])
    d_new = max_diff(got["token_nll"], expected["token_nll"])
    assert d_new < TOL, f"{variant}, {tm.transformers.__version__} form: {d_new:.2e}"
    print(f"{variant}: 4.x form {d_old:.1e}, {tm.transformers.__version__} form {d_new:.1e}")

    # a folder stating its rope twice, differently, is refused by name
    rope = config.get("rope_parameters") or {}
    if "full_attention" in rope:
        rope, shown = rope["full_attention"], "rope_parameters.full_attention.rope_theta"
    else:
        shown = "rope_parameters.rope_theta"
    if "rope_theta" in rope:
        (new / "config.json").write_text(json.dumps({**config, "rope_theta": rope["rope_theta"] / 100}))
        p = run("score", "--model", str(new), "--text-file", str(tmp_path / "text.txt"), check=False)
        assert p.returncode == 1 and shown in p.stderr, p.stderr


@pytest.fixture(scope="module")
def smollm_reference(demo_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=demo_model.name, torch_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(demo_model.parent, **kw).eval()
    tok = AutoTokenizer.from_pretrained(demo_model.parent, gguf_file=demo_model.name)
    return model, tok


def test_smollm2_gguf_scores_like_transformers(run, tmp_path, demo_model, smollm_reference):
    ref, tok = smollm_reference
    got = score(run, demo_model, tmp_path)
    # transformers' GGUF tokenizer ignores `tokenizer.ggml.pre` (digits; this text has none)
    # and prepends a BOS although the file says `tokenizer.ggml.add_bos_token = false`, as
    # SmolLM2's own tokenizer does not; compare the text's tokens.
    assert got["token_ids"] == tok(tm.TEXT, add_special_tokens=False)["input_ids"]
    want = tm.token_nll(ref, got["token_ids"])
    diff = max(abs(a - b) for a, b in zip(got["token_nll"], want))
    assert diff < TOL, f"max |NLL - transformers| = {diff:.2e}"
    assert 1.0 < got["mean_nll"] < 6.0


# Long enough (194 tokens) for the mean of per-token bf16 errors to be measured with a
# standard error well under its size.
LONG_TEXT = (
    "The printing press changed how knowledge moved through Europe. Before it, a book was copied "
    "by hand, one page at a time, and a single mistake could travel through every later copy. "
    "Gutenberg's workshop in Mainz combined movable metal type, an oil-based ink and a screw press "
    "adapted from wine making. Within fifty years, presses were running in more than two hundred "
    "cities, and millions of books had been printed. Prices fell, literacy rose, and scholars could "
    "compare identical editions across borders. Newspapers, pamphlets and scientific journals "
    "followed, each one faster and cheaper than the last. Historians still argue about how much of "
    "the Reformation and the scientific revolution the press made possible, but few doubt that it "
    "made ideas harder to suppress. Today a language model can be fine-tuned on a laptop in an "
    "afternoon, and the same questions return: who can publish, who checks what is written, and "
    "how quickly a good idea, or a bad one, can spread."
)


def test_smollm2_bf16_is_as_close_to_f32_as_pytorch_bf16(run, tmp_path, demo_model, smollm_reference):
    # Two bf16 implementations round at different points, so they are compared by their
    # distance from the f32 truth: ours must be no further from it than transformers' own.
    # Every bound here is relative to transformers' bf16 measured in this same test, on this
    # same CPU, so none depends on which SIMD kernels (AVX2, AVX-512, AMX, NEON) either side got.
    ref, _ = smollm_reference
    f = tmp_path / "text.txt"
    f.write_text(LONG_TEXT)
    ws = {d: json.loads(run("score", "--model", str(demo_model), "--text-file", str(f), "--dtype", d,
                            "--json").stdout) for d in ("f32", "bf16")}
    ids = ws["f32"]["token_ids"]
    assert ws["bf16"]["token_ids"] == ids and len(ids) > 150
    truth = tm.token_nll(ref, ids)
    torch16 = tm.token_nll(copy.deepcopy(ref).to(torch.bfloat16), ids)
    ours16 = ws["bf16"]["token_nll"]

    def err(xs):
        d = [abs(a - b) for a, b in zip(xs, truth)]
        return sum(d) / len(d), max(d)

    ours, theirs = err(ours16), err(torch16)
    print(f"bf16 per-token NLL error (mean, max): ours {ours[0]:.4f}, {ours[1]:.3f}; "
          f"transformers {theirs[0]:.4f}, {theirs[1]:.3f}")
    assert ours[0] > 1e-3, "the bf16 score is the f32 one: the dtype was ignored"
    # Per-token errors: the mean within 1.5x and the worst within 2x of transformers' own
    # (measured on this text: ours 0.0393 / 0.237, transformers 0.0390 / 0.178 nats per token).
    assert ours[0] < 1.5 * theirs[0] and ours[1] < 2 * theirs[1], (ours, theirs)
    # No systematic shift: rounding noise averages out over the text, a bias would not. Our
    # shift of the mean NLL (bf16 - f32) may exceed transformers' shift only by what the
    # token-to-token noise of the difference allows: 4 standard errors of its mean.
    n = len(truth)
    diff = [a - b for a, b in zip(ours16, torch16)]
    mean_diff = sum(diff) / n
    se = (sum((x - mean_diff) ** 2 for x in diff) / (n - 1)) ** 0.5 / n ** 0.5
    shift_ours = ws["bf16"]["mean_nll"] - ws["f32"]["mean_nll"]
    shift_theirs = sum(torch16) / n - sum(truth) / n
    print(f"mean NLL shift in bf16: ours {shift_ours:+.4f}, transformers {shift_theirs:+.4f}, "
          f"standard error {se:.4f}")
    assert abs(shift_ours) <= abs(shift_theirs) + 4 * se, (shift_ours, shift_theirs, se)
    assert err(ws["f32"]["token_nll"])[1] < TOL


def test_smollm2_splits_digits_like_its_own_tokenizer(run, tmp_path, demo_model, smollm_reference):
    # SmolLM2's own tokenizer (llama.cpp pre = "smollm") isolates every digit before the
    # byte-level split: "Call 2024 now" -> Call, Ġ, 2, 0, 2, 4, Ġnow.
    _, tok = smollm_reference
    got = score(run, demo_model, tmp_path, text="Call 2024 now")
    digits = tok.convert_tokens_to_ids(["2", "0", "2", "4"])
    assert got["token_ids"][2:6] == digits and got["tokens"] == 7, got["token_ids"]


def test_smollm2_greedy_chat_matches_transformers(run, demo_model, smollm_reference):
    ref, _ = smollm_reference
    g = run("chat", "--model", str(demo_model), "--temperature", "0", "--repetition-penalty", "1",
            "--max-tokens", "32", "--json", "What is the capital of France?").stdout
    g = json.loads(g)
    assert "Paris" in g["text"]
    # we report the answer without its end-of-turn token (2)
    tm.assert_greedy_agrees(tm.last_logits(ref), g["prompt_ids"], g["token_ids"], eos=2, max_tokens=32)


def test_smollm2_greedy_32_tokens_match_transformers(run, demo_model, smollm_reference):
    ref, _ = smollm_reference
    g = greedy(run, demo_model, "The history of the printing press")
    assert len(g["token_ids"]) == 32 and g["finish_reason"] == "length"
    tm.assert_greedy_agrees(tm.last_logits(ref), g["prompt_ids"], g["token_ids"], eos=2, max_tokens=32)


def test_chat_streams_and_reports_speed(run, demo_model):
    p = run("chat", "--model", str(demo_model), "--max-tokens", "24", "--temperature", "0",
            "What is the capital of France?")
    assert "Paris" in p.stdout
    assert "tokens/s" in p.stderr


def test_models_add_and_list(run, tmp_path, demo_model):
    folder = tm.make_model(tmp_path / "tiny", family="qwen2")
    a = json.loads(run("models", "add", str(demo_model), "--json").stdout)
    b = json.loads(run("models", "add", str(folder), "--json").stdout)
    assert a["id"] == "smollm2-135m-instruct-q4-1" and a["architecture"] == "llama"
    assert a["parameter_count"] == 134515008  # SmolLM2-135M, tied embeddings
    assert b["source"] == "folder" and b["architecture"] == "qwen2"
    again = json.loads(run("models", "add", str(demo_model), "--json").stdout)
    assert again["id"] == a["id"]
    listed = json.loads(run("models", "list", "--json").stdout)
    assert [m["id"] for m in listed] == [a["id"], b["id"]]
    # a registered id works wherever a model is asked for
    assert score(run, a["id"], tmp_path)["tokens"] > 10


def expect_user_error(run, args, *needles):
    p = run(*args, check=False)
    assert p.returncode == 1, f"exit {p.returncode}, stderr: {p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert str(n) in lines[0], lines[0]
    assert "panicked" not in p.stderr
    return lines[0]


@pytest.fixture
def tiny(tmp_path):
    return tm.make_model(tmp_path / "tiny", family="llama")


def test_bad_models_are_one_line_user_errors(run, tmp_path, tiny, demo_model):
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    sc = lambda m: ["score", "--model", str(m), "--text-file", str(text)]  # noqa: E731

    def variant(name):
        d = tmp_path / name
        shutil.copytree(tiny, d)
        return d

    # missing weights
    d = variant("no-weights")
    (d / "model.safetensors").unlink()
    expect_user_error(run, sc(d), d, "no *.safetensors")
    # truncated weights
    d = variant("truncated")
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    expect_user_error(run, sc(d), w, "safetensors")
    # nonsense config field
    d = variant("bad-heads")
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_key_value_heads"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    expect_user_error(run, sc(d), d / "config.json", "num_key_value_heads")
    # missing config field
    d = variant("no-hidden")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["hidden_size"]
    (d / "config.json").write_text(json.dumps(cfg))
    expect_user_error(run, sc(d), d / "config.json", "hidden_size", "missing")
    # unsupported architecture
    d = variant("gpt2")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (d / "config.json").write_text(json.dumps(cfg))
    expect_user_error(run, sc(d), "gpt2", "not supported")
    # tokenizer that does not match the vocabulary
    d = variant("small-vocab")
    cfg = json.loads((d / "config.json").read_text())
    cfg["vocab_size"] = 100
    (d / "config.json").write_text(json.dumps(cfg))
    expect_user_error(run, sc(d), "tokenizer.json", "does not match")
    # weights that do not fit the config
    d = variant("wrong-shape")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(cfg))
    expect_user_error(run, sc(d), d, "mlp", "shape")
    # truncated GGUF
    g = tmp_path / "cut.gguf"
    with open(demo_model, "rb") as src:
        g.write_bytes(src.read(40 << 20))
    expect_user_error(run, sc(g), g, "truncated")
    # not a model at all
    expect_user_error(run, sc(text), text, "not a model")
    expect_user_error(run, sc("no-such-model"), "no-such-model")
    # registering refuses a broken model and keeps the registry clean
    expect_user_error(run, ["models", "add", str(tmp_path / "truncated")], "safetensors")
    assert json.loads(run("models", "list", "--json").stdout) == []


# Every config key that changes what a family computes is either honoured — transformers and
# Whetstone give the same NLL for a folder saved with it — or refused with its name. Keys the
# family's transformers class ignores are not listed.
HONOURED = [
    ("llama", dict(rope_theta=500000.0)),
    ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 4.0})),
    ("llama", dict(attention_bias=True)),
    ("llama", dict(mlp_bias=True)),
    ("llama", dict(head_dim=32)),
    ("llama", dict(tie_word_embeddings=False)),
    ("llama", dict(rms_norm_eps=0.1)),
    ("llama", dict(num_key_value_heads=1)),
    ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=0)),
    ("qwen2", dict(tie_word_embeddings=True)),
    ("qwen3", dict(head_dim=8)),
    ("qwen3", dict(attention_bias=True)),
    ("qwen3", dict(use_sliding_window=True, sliding_window=5, max_window_layers=1)),
    ("mistral", dict(sliding_window=5)),
    ("mistral", dict(head_dim=32)),
    ("smollm3", dict(no_rope_layers=[0, 1])),
    ("smollm3", dict(no_rope_layer_interval=1)),
    ("smollm3", dict(attention_bias=True, mlp_bias=True)),
    ("smollm3", dict(use_sliding_window=True, sliding_window=3)),
    ("gemma2", dict(attn_logit_softcapping=None, final_logit_softcapping=None)),
    ("gemma2", dict(query_pre_attn_scalar=64, sliding_window=3)),
    ("gemma2", dict(attention_bias=True)),
    ("gemma3", dict(rope_local_base_freq=50.0, rope_theta=20000.0)),
    ("gemma3", dict(final_logit_softcapping=4.0)),
    ("gemma3", dict(layer_types=["full_attention", "sliding_attention"])),
    ("gemma3", dict(head_dim=8, query_pre_attn_scalar=8)),
    ("phi3", dict(partial_rotary_factor=0.75)),
    ("phi3", dict(sliding_window=5)),
    ("phi3", tm.PHI3_LONGROPE),
    ("phi3", dict(tm.PHI3_LONGROPE, max_position_embeddings=32)),
]

REFUSED = [
    ("llama", "rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling.rope_type"),
    ("llama", "rope_scaling", {"rope_type": "dynamic", "factor": 2.0}, "rope_scaling.rope_type"),
    ("llama", "rope_scaling", {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8},
     "rope_scaling.rope_type"),
    ("llama", "rope_parameters", {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}, "rope_parameters.rope_type"),
    ("llama", "rope_parameters", {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                  "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}, "rope_parameters"),
    ("llama", "partial_rotary_factor", 0.5, "partial_rotary_factor"),
    ("llama", "hidden_act", "gelu_pytorch_tanh", "hidden_act"),
    ("llama", "attn_logit_softcapping", 50.0, "attn_logit_softcapping"),
    ("llama", "final_logit_softcapping", 30.0, "final_logit_softcapping"),
    ("llama", "no_rope_layers", [1, 0], "no_rope_layers"),
    ("llama", "layer_types", ["sliding_attention", "full_attention"], "layer_types[0]"),
    ("qwen2", "layer_types", ["full_attention", "chunked_attention"], "layer_types[1]"),
    ("mistral", "attention_bias", True, "attention_bias"),
    ("llama", "model_type", "gemma3", "model_type"),
    ("llama", "model_type", "phimoe", "model_type"),
    # refused as an unsupported type (4.x form) or as disagreeing with rope_parameters (5.x form)
    ("phi3", "rope_scaling", {"type": "dynamic", "factor": 2.0}, "rope_scaling"),
    ("phi3", "partial_rotary_factor", 0.3, "partial_rotary_factor"),
    ("gemma2", "hidden_activation", "gelu", "hidden_activation"),
    ("gemma3", "use_bidirectional_attention", True, "use_bidirectional_attention"),
    ("gemma3", "attn_logit_softcapping", 50.0, "attn_logit_softcapping"),
    ("gemma3", "rope_scaling", {"rope_type": "yarn", "factor": 8.0}, "rope_scaling.rope_type"),
]


@pytest.mark.parametrize("family,overrides", HONOURED, ids=lambda x: x if isinstance(x, str) else
                         ",".join(f"{k}={v}" for k, v in x.items()))
def test_every_math_key_is_honoured(run, tmp_path, family, overrides):
    path = tm.make_model(tmp_path / "m", family, seed=9, **overrides)
    saved = json.loads((path / "config.json").read_text())
    for k in overrides:
        if k not in ("rope_theta", "rope_scaling", "rope_local_base_freq", "partial_rotary_factor",
                     "original_max_position_embeddings"):  # transformers 5: in rope_parameters
            assert k in saved, f"{k} was not saved"
    got = score(run, path, tmp_path)
    want = tm.token_nll(tm.load_reference(path), got["token_ids"])
    diff = max(abs(a - b) for a, b in zip(got["token_nll"], want))
    assert diff < TOL, f"{family} {overrides}: max |NLL - transformers| = {diff:.2e}"


@pytest.mark.parametrize("family,key,value,shown", REFUSED, ids=lambda x: x if isinstance(x, str) else None)
def test_every_unsupported_math_key_is_refused_by_name(run, tmp_path, family, key, value, shown):
    path = tm.make_model(tmp_path / "m", family, seed=9)
    config = json.loads((path / "config.json").read_text())
    config[key] = value
    (path / "config.json").write_text(json.dumps(config))
    text = tmp_path / "t.txt"
    text.write_text("hi")
    p = run("score", "--model", str(path), "--text-file", str(text), check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert "config.json" in lines[0] and (f"`{shown}`" in lines[0] or f"`{shown}." in lines[0]), lines[0]


@pytest.mark.parametrize("family,key", [("qwen3", "attention_dropout"), ("phi3", "resid_pdrop")])
def test_dropout_is_refused_for_training_not_for_scoring(run, tmp_path, family, key):
    path = tm.make_model(tmp_path / "m", family, seed=9, **{key: 0.1})
    got = score(run, path, tmp_path)  # inference has no dropout: honoured
    want = tm.token_nll(tm.load_reference(path), got["token_ids"])
    assert max(abs(a - b) for a, b in zip(got["token_nll"], want)) < TOL
    data = tmp_path / "d.txt"
    data.write_text("\n".join([tm.TEXT] * 8))
    p = run("train", "--model", str(path), "--data", str(data), "--method", "lora", "--set", "max_steps=1",
            check=False)
    assert p.returncode == 1 and f"`{key}` = 0.1" in p.stderr, p.stderr
