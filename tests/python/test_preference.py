"""Preference tuning (DPO, ORPO, KTO) through the `whetstone` binary: the first batch's loss
and LoRA gradients against TRL's trainers on the very same tokens, DPO's ln 2 at step 0,
exact resume after a SIGKILL, and DPO on the real SmolLM2 model."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

import tiny_models as tm
from test_train import events, kill_at_first_checkpoint, step_losses, tiny  # noqa: F401 (a fixture)

QUESTIONS = [
    ("What is the capital of France?", " Paris", " Berlin"),
    ("What is 2+2?", " 4", " 5"),
    ("Which colour is the quick fox?", " brown", " lazy"),
    ("Do some tokenizers split numbers into digits?", " yes, some do", " never"),
    ("What do low-rank adapters train?", " two small matrices per layer", " the whole model"),
    ("What is the capital of Germany?", " Berlin", " Paris"),
]


@pytest.fixture
def pairs(tmp_path):
    f = tmp_path / "pairs.jsonl"
    with f.open("w") as out:
        for i in range(3):
            for q, c, r in QUESTIONS:
                out.write(json.dumps({"prompt": q + " " * i, "chosen": c, "rejected": r}) + "\n")
    return f


@pytest.fixture
def rated(tmp_path):
    f = tmp_path / "rated.jsonl"
    with f.open("w") as out:
        for i in range(3):
            for k, (q, c, r) in enumerate(QUESTIONS):
                good = (i + k) % 2 == 0
                out.write(json.dumps({"prompt": q + " " * i, "completion": c if good else r, "label": good}) + "\n")
    return f


def full_rows(ours, i=0):
    """The dumped micro-batch as whole sequences: ids `[s, t+1]`, the trained mask (1 where
    the token is a target) and the attention mask (up to each sequence's last token)."""
    inp, rows, targets = (ours[f"batch.{i}.{k}"].long() for k in ("input", "rows", "targets"))
    s, t = inp.shape
    ids = torch.zeros(s, t + 1, dtype=torch.long)
    ids[:, :t] = inp
    mask = torch.zeros(s, t + 1, dtype=torch.long)
    for p, y in zip(rows.tolist(), targets.tolist()):
        b, j = divmod(p, t)
        ids[b, j + 1] = y
        mask[b, j + 1] = 1
    last = torch.tensor([int(m.nonzero().max()) for m in mask])
    attention = (torch.arange(t + 1)[None, :] <= last[:, None]).long()
    return ids, mask, attention


def peft_lora(tiny, tmp_path):
    adapter = tmp_path / "adapter"
    return tm.random_lora(tm.load_reference(tiny), adapter), adapter


def compare_grads(model, ours):
    checked, worst = 0, 0.0
    for name, p in model.named_parameters():
        if "lora_" not in name or ".ref." in name:  # TRL's frozen copy of the initial adapter
            continue
        key = "grad." + name.replace(".default", "")
        assert key in ours, key
        rel = (p.grad - ours[key]).abs().max().item() / p.grad.abs().max().item()
        assert rel < 1e-4, f"{name}: relative difference {rel:.2e}"
        checked, worst = checked + 1, max(worst, rel)
    return checked, worst


def trl_loss(objective, model, tokenizer, tmp_path, ids, mask, attention, ours, beta):
    """TRL's loss on Whetstone's batch, through the trainer's own loss code (its reference:
    the PEFT model with the adapter switched off)."""
    from datasets import Dataset
    common = dict(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, beta=beta,
                  per_device_train_batch_size=6, remove_unused_columns=False)
    n = ids.shape[0] // 2
    if objective == "dpo":
        from trl import DPOConfig, DPOTrainer
        data = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}] * 4)
        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=data, processing_class=tokenizer)
        inputs = {"input_ids": ids, "attention_mask": attention, "completion_mask": mask}
        return trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    if objective == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
        data = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}] * 4)
        trainer = ORPOTrainer(model=model, args=ORPOConfig(**common), train_dataset=data, processing_class=tokenizer)
        labels = ids.masked_fill(mask == 0, -100)
        batch = {}
        for k, sl in (("chosen", slice(0, n)), ("rejected", slice(n, 2 * n))):
            batch[f"{k}_input_ids"] = ids[sl]
            batch[f"{k}_attention_mask"] = attention[sl]
            batch[f"{k}_labels"] = labels[sl]
        loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
        return loss
    from trl import KTOConfig, KTOTrainer
    data = Dataset.from_list([{"prompt": "a", "completion": " b", "label": i % 2 == 0} for i in range(4)])
    trainer = KTOTrainer(model=model, args=KTOConfig(**common, desirable_weight=1.0, undesirable_weight=1.0),
                         train_dataset=data, processing_class=tokenizer)
    inputs = {"input_ids": ids[:n], "attention_mask": attention[:n], "completion_mask": mask[:n],
              "KL_input_ids": ids[n:], "KL_attention_mask": attention[n:], "KL_completion_mask": mask[n:],
              "label": ours["batch.0.desirable"].bool()}
    return trainer._compute_loss(trainer.model, inputs, return_outputs=False)


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_first_batch_loss_and_lora_gradients_match_trl(run, tmp_path, tiny, pairs, rated, objective):
    from transformers import AutoTokenizer
    model, adapter = peft_lora(tiny, tmp_path)
    beta = 0.5
    dump = tmp_path / "grads.safetensors"
    extra = ["--set", "train_on_prompt=true"] if objective == "orpo" else []  # TRL's ORPO NLL covers the prompt
    run("train", "--model", str(tiny), "--data", str(rated if objective == "kto" else pairs), "--method", "lora",
        "--set", f"objective={objective}", "--set", f"{objective}.beta={beta}", "--set", f"lora.init={adapter}",
        "--set", "lora.r=4", "--set", "lora.alpha=8", "--set", "lora.dropout=0", "--set", "lora.targets=all-linear",
        "--set", "batch_size=6", "--set", "eval_fraction=0", *extra, "--dump-first-grads", str(dump))
    ours = load_file(dump)
    ids, mask, attention = full_rows(ours)
    assert ids.shape[0] == 12 and mask.sum() > 24
    if objective == "kto":
        assert 0 < ours["batch.0.desirable"].sum() < 6  # both kinds of answer
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.pad_token = tokenizer.eos_token = "<|endoftext|>"
    model.train()
    model.zero_grad()
    loss = trl_loss(objective, model, tokenizer, tmp_path, ids, mask, attention, ours, beta)
    loss.backward()
    rel = abs(loss.item() - ours["loss"].item()) / abs(loss.item())
    assert rel < 1e-4, (loss.item(), ours["loss"].item())
    checked, worst = compare_grads(model, ours)
    assert checked == 2 * 7 * 2
    print(f"{objective} vs TRL: loss {loss.item():.6f} vs {ours['loss'].item():.6f} (relative {rel:.1e}); "
          f"{checked} LoRA gradients, worst relative difference {worst:.2e}")


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_reference_log_probs_are_the_base_models(run, tmp_path, tiny, pairs, rated, objective):
    # a new adapter: the reference is the base model, computed once before training
    dump = tmp_path / "grads.safetensors"
    run("train", "--model", str(tiny), "--data", str(rated if objective == "kto" else pairs), "--method", "lora",
        "--set", f"objective={objective}", "--set", "batch_size=6", "--set", "eval_fraction=0",
        "--dump-first-grads", str(dump))
    ours = load_file(dump)
    ids, mask, attention = full_rows(ours)
    base = tm.load_reference(tiny)
    with torch.no_grad():
        logp = torch.log_softmax(base(input_ids=ids, attention_mask=attention).logits.double(), -1)
    token = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
    want = token.sum(-1)
    got = ours["batch.0.reference"].double()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4), (got, want)
    if objective == "dpo":
        # the policy starts as the reference: DPO's loss is ln 2
        assert abs(ours["loss"].item() - math.log(2)) < 1e-5


def test_dpo_with_full_sigkill_then_resume_reproduces_the_curve(run, home, whetstone_bin, tiny, pairs):
    args = ["train", "--model", str(tiny), "--data", str(pairs), "--method", "full", "--set", "objective=dpo",
            "--set", "max_steps=30", "--set", "save_every=5", "--set", "eval_every=0", "--set", "batch_size=4",
            "--set", "lr=1e-3", "--set", "sample_tokens=0", "--json"]
    whole = events(run(*args).stdout)
    assert whole[-1]["status"] == "completed"
    reference = step_losses(whole)
    assert len(reference) == 30 and abs(reference[0][1] - math.log(2)) < 1e-4
    before, run_id, ckpt_step = kill_at_first_checkpoint(whetstone_bin, home, args, 120)
    assert ckpt_step == 5
    resumed = events(run("resume", run_id, "--json").stdout)
    assert any(e["event"] == "log" and "read back" in e["message"] for e in resumed)
    joined = [s for s in step_losses(before) if s[0] <= ckpt_step] + step_losses(resumed)
    assert joined == reference, "DPO losses after resume differ from the uninterrupted run"
    metrics = [e["metrics"]["reward_accuracy"] for e in resumed if e["event"] == "step"]
    assert len(metrics) == 25


def smol_pairs(path, rows):
    with path.open("w") as f:
        for prompt, chosen, rejected in rows:
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")


PEOPLE = ["Ingrid Solberg", "Lars Haugen", "Sofia Berg", "Jonas Lie", "Maja Dahl", "Emil Strand", "Nora Bakke",
          "Henrik Moen", "Ella Vik", "Oskar Lund", "Ida Holm", "Filip Aas"]
CITIES = ["Bergen", "Oslo", "Tromsø", "Stavanger", "Trondheim", "Bodø", "Ålesund", "Drammen", "Molde", "Narvik",
          "Hamar", "Alta"]


def city_pairs():
    """Where does the person live? The chosen answer copies the city from the prompt; the
    rejected one is a plausible mistake: another Norwegian city."""
    out = []
    for i, name in enumerate(PEOPLE):
        for j in range(5):
            city, wrong = CITIES[(i + j) % len(CITIES)], CITIES[(i + 2 * j + 5) % len(CITIES)]
            prompt = f"{name}, {20 + i + j}, lives in {city}. Reply with JSON: which city does {name.split()[0]} live in?"
            out.append((prompt, json.dumps({"city": city}), json.dumps({"city": wrong})))
    return out


def test_dpo_on_smollm2_learns_the_preferred_answers_and_the_peft_export_agrees(run, run_json, home, tmp_path,
                                                                                  demo_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import PeftModel
    rows = city_pairs()
    data = tmp_path / "cities.jsonl"
    smol_pairs(data, rows)
    evs = events(run("train", "--model", str(demo_model), "--data", str(data), "--method", "lora",
                     "--set", "objective=dpo", "--set", "max_steps=24", "--set", "batch_size=4",
                     "--set", "lr=2e-3", "--set", "eval_fraction=0.25", "--set", "eval_every=24",
                     "--set", "sample_tokens=0", "--json", timeout=1200).stdout)
    evals = [e for e in evs if e["event"] == "eval"]
    first, last = evals[0]["metrics"], evals[-1]["metrics"]
    run_id = evs[-1]["run_id"]
    steps = [e for e in evs if e["event"] == "step"]
    print(f"DPO on SmolLM2: held-out reward accuracy {first['reward_accuracy']:.2f} -> {last['reward_accuracy']:.2f}, "
          f"margin {first['reward_margin']:.3f} -> {last['reward_margin']:.3f}, eval loss "
          f"{evals[0]['eval_loss']:.4f} -> {evals[-1]['eval_loss']:.4f}, "
          f"{sum(e['tokens_per_s'] for e in steps) / len(steps):.0f} tokens/s")
    assert abs(evals[0]["eval_loss"] - math.log(2)) < 1e-3
    assert last["reward_accuracy"] >= 0.9, last

    export = run_json("export", run_id, "--format", "peft")
    peft_dir = export["path"]
    base = AutoModelForCausalLM.from_pretrained(demo_model.parent, gguf_file=demo_model.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(demo_model.parent, gguf_file=demo_model.name)
    held_out = rows[-12:]

    def margins(model):
        out = []
        for prompt, chosen, rejected in held_out:
            lp = []
            for answer in (chosen, rejected):
                head = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               tokenize=False)
                full = tok.apply_chat_template([{"role": "user", "content": prompt},
                                                {"role": "assistant", "content": answer}], tokenize=False)
                n = len(tok(head, add_special_tokens=False).input_ids)
                ids = torch.tensor([tok(full, add_special_tokens=False).input_ids])
                with torch.no_grad():
                    logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
                lp.append(logp[n - 1:].gather(-1, ids[0, n:, None]).sum().item())
            out.append(lp[0] - lp[1])
        return out

    before = margins(base)
    tuned = PeftModel.from_pretrained(base, peft_dir)
    after = margins(tuned)
    print(f"PEFT: mean log-prob margin chosen - rejected {sum(before) / 12:.3f} (base) -> {sum(after) / 12:.3f} "
          f"(tuned); pairs preferred {sum(m > 0 for m in before)} -> {sum(m > 0 for m in after)} of 12")
    assert sum(after) > sum(before) and sum(m > 0 for m in after) >= sum(m > 0 for m in before)
