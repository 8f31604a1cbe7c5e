"""GGUF models written by the test with the `gguf` package, read back by Whetstone and by
transformers' GGUF loader (which dequantizes with `gguf.quants`).

One tiny Llama holds every tensor type Whetstone must read (F32, F16, BF16, Q8_0, Q4_0,
Q4_1, Q4_K, Q5_K, Q6_K). Its tokenizer is either byte-level BPE (`gpt2`) or a real
SentencePiece BPE model with byte fallback (`llama`), trained here with sentencepiece.
"""
import json

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

import tiny_models as tm

H, I, L, NH, NKV = 256, 512, 2, 4, 2  # K-quant rows need multiples of 256
K_BLOCK = {Q.Q4_K: 144, Q.Q5_K: 176, Q.Q6_K: 210}

TYPES = {
    "token_embd.weight": Q.Q8_0,
    "output.weight": Q.Q5_K,
    "blk.0.attn_q.weight": Q.Q4_K, "blk.0.attn_k.weight": Q.Q5_K, "blk.0.attn_v.weight": Q.Q6_K,
    "blk.0.attn_output.weight": Q.Q4_0, "blk.0.ffn_gate.weight": Q.Q4_1, "blk.0.ffn_up.weight": Q.F16,
    "blk.0.ffn_down.weight": Q.BF16,
    "blk.1.attn_q.weight": Q.Q6_K, "blk.1.attn_k.weight": Q.Q4_0, "blk.1.attn_v.weight": Q.Q4_K,
    "blk.1.attn_output.weight": Q.Q5_K, "blk.1.ffn_gate.weight": Q.Q8_0, "blk.1.ffn_up.weight": Q.Q4_1,
    "blk.1.ffn_down.weight": Q.F32,
}


def k_quant_bytes(rng, qtype, rows, cols):
    """Random but valid K-quant blocks: random payload, f16 scales small enough that the
    weights stay in the range of a trained model (|w| < 1)."""
    size = K_BLOCK[qtype]
    blocks = rng.integers(0, 256, size=(rows, cols // 256, size), dtype=np.uint8)

    def f16(lo, hi):
        return rng.uniform(lo, hi, size=(rows, cols // 256)).astype(np.float16).view(np.uint8).reshape(rows, cols // 256, 2)

    if qtype == Q.Q6_K:
        blocks[..., 208:210] = f16(5e-5, 1.5e-4)  # d at the end; int8 scales before it
    else:
        blocks[..., 0:2] = f16(1e-4, 3e-4)  # d
        blocks[..., 2:4] = f16(1e-4, 3e-4)  # dmin
    return blocks.reshape(rows, -1)


def tensor_data(rng, name, shape):
    qtype = TYPES.get(name, Q.F32)
    rows, cols = shape if len(shape) == 2 else (1, shape[0])
    if qtype in K_BLOCK:
        return k_quant_bytes(rng, qtype, rows, cols), qtype
    if len(shape) == 1:
        w = (1.0 + 0.3 * rng.standard_normal(shape)).astype(np.float32)  # norms
    else:
        w = (0.08 * rng.standard_normal(shape)).astype(np.float32)
    if qtype == Q.F32:
        return w, None
    if qtype == Q.F16:
        return w.astype(np.float16), None
    return gguf.quants.quantize(w, qtype), qtype


def write_model(path, tokenizer_meta, vocab):
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-quant-test")
    w.add_block_count(L)
    w.add_context_length(256)
    w.add_embedding_length(H)
    w.add_feed_forward_length(I)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(H // NH)
    w.add_vocab_size(vocab)
    tokenizer_meta(w)
    hd = H // NH
    shapes = {"token_embd.weight": (vocab, H), "output.weight": (vocab, H), "output_norm.weight": (H,)}
    for b in range(L):
        shapes.update({
            f"blk.{b}.attn_norm.weight": (H,), f"blk.{b}.ffn_norm.weight": (H,),
            f"blk.{b}.attn_q.weight": (NH * hd, H), f"blk.{b}.attn_k.weight": (NKV * hd, H),
            f"blk.{b}.attn_v.weight": (NKV * hd, H), f"blk.{b}.attn_output.weight": (H, NH * hd),
            f"blk.{b}.ffn_gate.weight": (I, H), f"blk.{b}.ffn_up.weight": (I, H), f"blk.{b}.ffn_down.weight": (H, I),
        })
    for name, shape in shapes.items():
        data, raw = tensor_data(rng, name, shape)
        if raw is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gpt2_tokenizer(tmp_path):
    fast = tm.make_tokenizer(tmp_path / "tok")
    spec = json.loads(fast.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]

    def meta(w):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types([gguf.TokenType.CONTROL if t == "<|endoftext|>" else gguf.TokenType.NORMAL for t in tokens])
        w.add_token_merges(merges)
        w.add_bos_token_id(0)
        w.add_eos_token_id(0)
        w.add_add_bos_token(False)

    return meta, len(tokens)


def sentencepiece_tokenizer(tmp_path):
    import sentencepiece as spm

    prefix = tmp_path / "sp"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tm.CORPUS * 20), model_prefix=str(prefix), model_type="bpe", vocab_size=400,
        byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        add_dummy_prefix=True, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    n = sp.get_piece_size()
    tokens = [sp.id_to_piece(i) for i in range(n)]
    scores = [sp.get_score(i) for i in range(n)]

    def kind(i):
        if sp.is_unknown(i):
            return gguf.TokenType.UNKNOWN
        if sp.is_control(i):
            return gguf.TokenType.CONTROL
        if sp.is_byte(i):
            return gguf.TokenType.BYTE
        return gguf.TokenType.NORMAL

    def meta(w):
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types([kind(i) for i in range(n)])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)

    return meta, n, sp


@pytest.mark.parametrize("tokenizer", ["gpt2", "llama"])
def test_every_tensor_type_matches_transformers(run, tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    if tokenizer == "gpt2":
        meta, vocab = gpt2_tokenizer(tmp_path)
        sp = None
    else:
        meta, vocab, sp = sentencepiece_tokenizer(tmp_path)
    path = tmp_path / f"tiny-{tokenizer}.gguf"
    write_model(path, meta, vocab)
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    assert {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"} <= kinds

    text = "The quick brown fox jumps over the lazy dog; 42 adapters."
    f = tmp_path / "t.txt"
    f.write_text(text)
    got = json.loads(run("score", "--model", str(path), "--text-file", str(f), "--json").stdout)
    if sp is not None:
        # SentencePiece itself is the truth for the llama tokenizer: BOS + pieces.
        assert got["token_ids"] == [1] + sp.encode(text), (got["token_ids"], sp.encode(text))

    ref = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, torch_dtype=torch.float32).eval()
    want = tm.token_nll(ref, got["token_ids"])
    diff = max(abs(a - b) for a, b in zip(got["token_nll"], want))
    assert diff < 1e-3, f"max |NLL - transformers| = {diff:.2e}"
    assert max(want) - min(want) > 0.5

    decoded = json.loads(run("chat", "--model", str(path), "--raw", "--temperature", "0", "--repetition-penalty",
                             "1", "--max-tokens", "8", "--json", "The quick").stdout)
    eos = 0 if tokenizer == "gpt2" else 2
    tm.assert_greedy_agrees(tm.last_logits(ref), decoded["prompt_ids"], decoded["token_ids"], eos=eos, max_tokens=8)
