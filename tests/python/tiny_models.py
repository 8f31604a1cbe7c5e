"""Random tiny models made with transformers, for oracle tests.

Each family gets a byte-level BPE tokenizer trained on a few sentences, a config small
enough to run in milliseconds, a large init range so logits are far from flat, and norm
weights and biases moved away from their init values so a loader that skipped them would
show up in the logits.
"""
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen3Config, SmolLM3Config, Gemma2Config, Gemma3TextConfig, Phi3Config)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Fine-tuning adapts a pretrained language model to a new task with little data.",
    "Low-rank adapters train two small matrices per layer and keep the base frozen.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "Numbers like 12345 and 2024 are split into digits by some tokenizers.",
    "def add(a, b):\n    return a + b\n",
]

TEXT = (
    "Whetstone fine-tunes language models on your own machine. The quick brown fox "
    "jumps over the lazy dog, and the adapter learns a little more with every step."
)


def make_tokenizer(out: Path, vocab_size: int = 320) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>")
    fast.save_pretrained(out)
    return fast


def make_config(family: str, vocab_size: int, **overrides):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    per_family = {
        "llama": (LlamaConfig, dict(rope_theta=10000.0, tie_word_embeddings=True)),
        "qwen2": (Qwen2Config, dict(rope_theta=1000000.0, tie_word_embeddings=False, use_sliding_window=False)),
        "mistral": (MistralConfig, dict(rope_theta=10000.0, tie_word_embeddings=False, sliding_window=None)),
        # per-head q/k norms; head_dim stated (the class default is 128, not hidden / heads)
        "qwen3": (Qwen3Config, dict(rope_theta=1000000.0, tie_word_embeddings=False, head_dim=16,
                                    use_sliding_window=False)),
        # every second layer without rope (the real models skip every fourth; two layers here)
        "smollm3": (SmolLM3Config, dict(rope_theta=50000.0, tie_word_embeddings=True, no_rope_layer_interval=2)),
        # soft-capped scores and logits, a query scale other than 1/sqrt(head_dim), a window
        # shorter than the text on every other layer, GeGLU, sandwich norms, scaled embeddings
        "gemma2": (Gemma2Config, dict(rope_theta=10000.0, head_dim=16, query_pre_attn_scalar=24,
                                      attn_logit_softcapping=5.0, final_logit_softcapping=8.0, sliding_window=6)),
        # and per-head q/k norms, a second rope theta on the sliding layers
        "gemma3": (Gemma3TextConfig, dict(rope_theta=1000000.0, rope_local_base_freq=500.0, head_dim=16,
                                          query_pre_attn_scalar=20, sliding_window=6,
                                          layer_types=["sliding_attention", "full_attention"])),
        # fused qkv_proj and gate_up_proj
        "phi3": (Phi3Config, dict(rope_theta=10000.0, tie_word_embeddings=False, sliding_window=None,
                                  resid_pdrop=0.0, embd_pdrop=0.0)),
    }
    cls, defaults = per_family[family]
    return cls(**{**common, **defaults, **overrides})


# LongRoPE with half of each 16-wide head rotated (4 frequency pairs), an original context of
# 32 positions and room for 256 (factor 8: attention factor sqrt(1 + ln 8 / ln 32) = 1.26)
PHI3_LONGROPE = dict(
    partial_rotary_factor=0.5, original_max_position_embeddings=32, max_position_embeddings=256,
    rope_scaling={"type": "longrope", "short_factor": [1.0, 1.2, 1.5, 2.0], "long_factor": [1.0, 2.0, 4.0, 8.0]},
)


def perturb(model, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


def make_model(out: Path, family: str, seed: int = 0, dtype=torch.float32, shard: bool = False, **overrides) -> Path:
    """Write an HF folder (config, tokenizer, safetensors) and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)
    torch.manual_seed(seed)
    config = make_config(family, len(tok), **overrides)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    perturb(model, seed)
    model = model.to(dtype)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="60KB" if shard else "5GB")
    return out


def randomize_adapter(peft_model, seed: int, scale: float):
    """Give every LoRA tensor random values (B = 0 at init would make the adapter a no-op)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def random_lora(ref, out: Path):
    """A PEFT LoRA (r 4, alpha 8, every linear, no dropout) on `ref` with random A *and* B,
    saved to `out`: B = 0 at init would make A's gradient zero."""
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(ref, cfg)
    randomize_adapter(model, seed=5, scale=0.2)
    model.save_pretrained(out)
    return model


def compare_peft_gradients(peft_model, ours, vocab_size):
    """Run PEFT's forward and backward on the batch Whetstone dumped (`--dump-first-grads`)
    and compare: the loss within 1e-5, every LoRA gradient within 1e-4 of the tensor's max.
    Returns (tensors checked, worst relative difference, the batch's row count)."""
    ids, rows, targets = (ours[f"batch.0.{k}"].long() for k in ("input", "rows", "targets"))
    peft_model.train()
    peft_model.zero_grad()
    logits = peft_model(input_ids=ids).logits.reshape(-1, vocab_size)
    loss = torch.nn.functional.cross_entropy(logits[rows], targets, reduction="sum") / len(targets)
    loss.backward()
    assert abs(loss.item() - ours["loss"].item()) < 1e-5
    checked, worst = 0, 0.0
    for name, p in peft_model.named_parameters():
        if "lora_" not in name:
            continue
        key = "grad." + name.replace(".default", "").replace("lora_magnitude_vector.weight", "lora_magnitude_vector")
        assert key in ours, key
        rel = (p.grad - ours[key]).abs().max().item() / p.grad.abs().max().item()
        assert rel < 1e-4, f"{name}: relative difference {rel:.2e}"
        checked, worst = checked + 1, max(worst, rel)
    return checked, worst, ids.shape[0]


def load_reference(path: Path):
    # eager attention: the reference implementation (SDPA silently drops Gemma 2's score
    # soft-capping in transformers 4.57)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def token_nll(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    target = torch.tensor(ids[1:])
    return (-logp[torch.arange(len(ids) - 1), target]).tolist()


# Two correct f32 implementations agree on every log-probability to within the per-token NLL
# tolerance the tests assert (1e-3 nats), but not bit for bit: their sums run in different
# orders, and the order depends on the CPU's SIMD width. Where the reference's top two tokens
# are closer than that, either choice is right, so greedy decoding is checked token by token
# (teacher-forced on our tokens) rather than by comparing two free-running generations,
# which would diverge for good after such a tie and fail on one CPU but not another.
GREEDY_TIE_NATS = 2e-3


def last_logits(model):
    def f(ids):
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    return f


def assert_greedy_agrees(logits_fn, prompt_ids, got_ids, eos=None, max_tokens=None):
    """Each of our greedy tokens is the reference's argmax after the same prefix, or within
    GREEDY_TIE_NATS of it. If we stopped early at `eos` (reported without it), the reference
    must also pick `eos` there; if we ran `max_tokens`, it must not have picked `eos` before.
    Returns the number of near-ties seen (for the report)."""
    ids, ties = list(prompt_ids), 0
    stopped = max_tokens is None or len(got_ids) < max_tokens
    expected = list(got_ids) + ([eos] if eos is not None and stopped else [])
    for k, token in enumerate(expected):
        logp = torch.log_softmax(logits_fn(ids), dim=-1)
        best = int(logp.argmax())
        if token != best:
            gap = float(logp[best] - logp[token])
            assert gap < GREEDY_TIE_NATS, (
                f"greedy token {k}: ours {token}, reference {best} ({gap:.2e} nats more likely)")
            ties += 1
        ids.append(token)
    return ties
