"""Write the committed transformers 4.x fixtures: tiny random model folders of every family as
transformers 4.57 saves them (top-level `rope_theta` / `rope_scaling`, `torch_dtype`,
`rope_local_base_freq`), with the token ids and per-token NLL 4.57 computed for them.

The test suite runs on transformers 5, which writes only the new form; these folders keep the
old form under test. Run once, with transformers 4.57 installed, from the repository root:

    python -m venv /tmp/t4 && /tmp/t4/bin/pip install torch==2.9.1 transformers==4.57.6 \
        --extra-index-url https://download.pytorch.org/whl/cpu
    /tmp/t4/bin/python tests/python/make_transformers4_fixtures.py
"""
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models as tm  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "transformers4"

# small enough to commit (about 130 KiB of f32 weights each), big enough that a misread key
# moves the NLL by nats
SHAPE = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)

VARIANTS = {
    "llama": dict(family="llama"),
    "llama3-rope-scaling": dict(family="llama", tie_word_embeddings=False, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}),
    "qwen2": dict(family="qwen2"),
    "qwen2-sliding-window": dict(family="qwen2", use_sliding_window=True, sliding_window=6, max_window_layers=1),
    "mistral": dict(family="mistral", sliding_window=7),
    "qwen3": dict(family="qwen3", head_dim=8),
    "smollm3": dict(family="smollm3"),
    "gemma2": dict(family="gemma2", head_dim=8, query_pre_attn_scalar=12),
    "gemma3": dict(family="gemma3", head_dim=8, query_pre_attn_scalar=10,
                   rope_scaling={"rope_type": "linear", "factor": 4.0}),
    # fused projections, LongRoPE (4 rotated pairs of each 8-wide head: partial rotary 1.0)
    "phi3": dict(family="phi3", original_max_position_embeddings=32, max_position_embeddings=256,
                 rope_scaling={"type": "longrope", "short_factor": [1.0, 1.5, 2.0, 3.0],
                               "long_factor": [1.0, 2.0, 4.0, 8.0]}),
}


def main():
    assert transformers.__version__.startswith("4."), f"needs transformers 4.x, not {transformers.__version__}"
    if OUT.exists():
        shutil.rmtree(OUT)
    for name, spec in VARIANTS.items():
        spec = dict(spec)
        family = spec.pop("family")
        path = tm.make_model(OUT / name, family, seed=len(name), **SHAPE, **spec)
        config = json.loads((path / "config.json").read_text())
        assert "rope_parameters" not in config and "rope_theta" in config, name
        tok = tm.PreTrainedTokenizerFast.from_pretrained(path)
        ids = tok(tm.TEXT)["input_ids"]
        nll = tm.token_nll(tm.load_reference(path), ids)
        (path / "expected.json").write_text(json.dumps({
            "transformers": transformers.__version__, "text": tm.TEXT, "token_ids": ids, "token_nll": nll,
        }, indent=1) + "\n")
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"{name}: {len(ids)} tokens, NLL {min(nll):.2f}..{max(nll):.2f}, {size // 1024} KiB")


if __name__ == "__main__":
    main()
