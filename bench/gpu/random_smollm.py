"""Write an HF folder with SmolLM2-135M's shapes and random weights (for GPU throughput runs
on a machine that cannot download the real model): 30 layers, hidden 576, GQA 9/3,
intermediate 1536, vocab 49152, tied embeddings; a small byte-level BPE tokenizer."""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests/python"))
import tiny_models  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
tiny_models.make_tokenizer(out)
tc = json.loads((out / "tokenizer_config.json").read_text())
tc["chat_template"] = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                       "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
(out / "tokenizer_config.json").write_text(json.dumps(tc))
cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                  rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                  bos_token_id=0, eos_token_id=0)
torch.manual_seed(0)
AutoModelForCausalLM.from_config(cfg).save_pretrained(out, safe_serialization=True)
print(out)
