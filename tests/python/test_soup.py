"""Sweeps and model soups on the real SmolLM2 GGUF: a seed sweep of three LoRA runs, the
uniform soup checked against PEFT and PyTorch (the mean of the ingredients' merged weight
changes), the greedy soup against its best ingredient, and the refusals."""
import copy
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

import tiny_models as tm
from test_train import events

SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "samples" / "extract.jsonl"
SHORT = ["--set", "max_steps=3", "--set", "batch_size=2", "--set", "seq_len=128", "--set", "eval_every=0",
         "--set", "sample_tokens=0", "--set", "lr=2e-3"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, whetstone_bin, demo_model):
    """One seed sweep (three LoRA runs) in a data directory of its own, shared below."""
    import os
    import subprocess
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "WHETSTONE_HOME": str(home)}

    def go(*args, check=True):
        p = subprocess.run([whetstone_bin, *args], env=env, capture_output=True, text=True, timeout=900)
        if check and p.returncode != 0:
            raise AssertionError(f"whetstone {' '.join(args)} exited {p.returncode}\nstderr: {p.stderr}")
        return p

    out = go("sweep", "--model", str(demo_model), "--data", str(SAMPLE), "--grid", "seed=1,2,3", *SHORT,
             "--name", "seeds", "--json").stdout
    lines = out.strip().splitlines()
    final = json.loads(lines[-1])
    # the training events come first, each with its run id
    assert {e["run_id"] for e in events("\n".join(lines[:-1])) if "run_id" in e} == {r["run_id"] for r in final["runs"]}
    return home, go, final


def test_a_seed_sweep_trains_three_runs_on_one_eval_split(swept):
    home, go, final = swept
    assert final["sweep"]["name"] == "seeds" and final["sweep"]["keys"] == ["seed"]
    runs = final["runs"]
    assert len(runs) == 3 and all(r["status"] == "completed" for r in runs)
    assert sorted(r["settings"]["seed"] for r in runs) == ["1", "2", "3"]
    # ranked by best eval loss, the first is "best"
    losses = [r["best_eval_loss"] for r in runs]
    assert losses == sorted(losses) and final["best"] == runs[0]["run_id"]
    # the same held-out records: the eval loss before training is one number
    assert len({round(r["first_eval_loss"], 9) for r in runs}) == 1
    for r in runs:
        cfg = json.loads(go("runs", "show", r["run_id"], "--json").stdout)["config"]
        assert cfg["split_seed"] == 42 and cfg["seed"] == int(r["settings"]["seed"])
    listed = json.loads(go("runs", "sweeps", "--json").stdout)
    assert listed[0]["id"] == final["sweep"]["id"] and listed[0]["runs"] == 3 and listed[0]["finished"] == 3
    shown = json.loads(go("runs", "sweep", final["sweep"]["id"], "--json").stdout)
    assert shown["best"] == final["best"] and all(r["sweep_id"] == final["sweep"]["id"] for r in shown["runs"])


def merged_delta(base, adapter_dir):
    """The weight change PEFT's own merge makes of an adapter folder, per weight name."""
    merged = PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir).merge_and_unload()
    ref = base.state_dict()
    return {k: v - ref[k] for k, v in merged.state_dict().items() if not torch.equal(v, ref[k])}


def test_the_uniform_soup_is_the_mean_of_the_merged_weight_changes(swept, demo_model, tmp_path):
    home, go, final = swept
    ids = [r["run_id"] for r in final["runs"]]
    soup = json.loads(go("soup", *ids, "--json").stdout.strip().splitlines()[-1])
    assert soup["recipe"] == "uniform" and len(soup["ingredients"]) == 3
    assert all(i["used"] and abs(i["weight"] - 1 / 3) < 1e-12 for i in soup["ingredients"])
    # each ingredient measured as the run measured itself
    best = {r["run_id"]: r["best_eval_loss"] for r in final["runs"]}
    for i in soup["ingredients"]:
        assert abs(i["eval_loss"] - best[i["run_id"]]) < 1e-4, i

    shown = json.loads(go("runs", "show", soup["run_id"], "--json").stdout)
    assert shown["kind"] == "soup" and shown["status"] == "completed" and shown["method"] == "lora"
    assert shown["soup"]["recipe"] == "uniform" and abs(shown["best_eval_loss"] - soup["eval_loss"]) < 1e-12
    assert abs(shown["first_eval_loss"] - soup["base_eval_loss"]) < 1e-12

    peft_dir = Path(json.loads(go("export", soup["run_id"], "--format", "peft", "--json").stdout)["path"])
    cfg = json.loads((peft_dir / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 3 * 8 and cfg["use_rslora"] is False

    base = AutoModelForCausalLM.from_pretrained(demo_model.parent, gguf_file=demo_model.name,
                                                dtype=torch.float32)
    base.eval()
    text = tmp_path / "t.txt"
    text.write_text(tm.TEXT)
    ours = json.loads(go("score", "--model", str(demo_model), "--adapter", soup["run_id"], "--text-file", str(text),
                         "--json").stdout)
    ids_ = ours["token_ids"]

    # PyTorch: base + the mean of the three ingredients' merged changes (PEFT's merge of each)
    deltas = [merged_delta(base, home / "runs" / rid / "checkpoints" / "best") for rid in ids]
    names = set().union(*deltas)
    averaged = copy.deepcopy(base)
    state = averaged.state_dict()
    with torch.no_grad():
        for k in names:
            state[k] += sum(d.get(k, torch.zeros_like(state[k])) for d in deltas) / 3
    averaged.load_state_dict(state)
    want = tm.token_nll(averaged, ids_)

    soup_model = PeftModel.from_pretrained(copy.deepcopy(base), peft_dir)
    soup_model.eval()
    got = tm.token_nll(soup_model, ids_)
    d_peft = max(abs(a - b) for a, b in zip(got, want))
    d_ours = max(abs(a - b) for a, b in zip(ours["token_nll"], want))
    print(f"uniform soup: PEFT export vs PyTorch mean of merged deltas {d_peft:.2e}; whetstone {d_ours:.2e}")
    assert d_peft <= 1e-3 and d_ours <= 1e-3

    # averaging A and B separately (the mistake) is measurably another model
    wrong = copy.deepcopy(base)
    tensors = [PeftModel.from_pretrained(copy.deepcopy(base), home / "runs" / rid / "checkpoints" / "best")
               for rid in ids]
    with torch.no_grad():
        for name, mod in wrong.named_modules():
            if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")):
                a = sum(dict(t.named_modules())["base_model.model." + name].lora_A["default"].weight for t in tensors) / 3
                b = sum(dict(t.named_modules())["base_model.model." + name].lora_B["default"].weight for t in tensors) / 3
                mod.weight += (b @ a) * (16 / 8)
    d_wrong = max(abs(a - b) for a, b in zip(tm.token_nll(wrong, ids_), want))
    print(f"mean of the factors instead: {d_wrong:.2e}")
    assert d_wrong > 10 * max(d_peft, 1e-6)

    # it exports as a llama.cpp adapter too
    gguf = json.loads(go("export", soup["run_id"], "--format", "gguf", "--json").stdout)
    assert gguf["kind"] == "gguf_adapter"


def test_the_greedy_soup_is_never_worse_than_its_best_ingredient(swept):
    home, go, final = swept
    ids = [r["run_id"] for r in final["runs"]]
    soup = json.loads(go("soup", *ids, "--greedy", "--json").stdout.strip().splitlines()[-1])
    ing = soup["ingredients"]
    assert soup["recipe"] == "greedy" and ing[0]["used"]
    assert [i["eval_loss"] for i in ing] == sorted(i["eval_loss"] for i in ing)
    print("greedy soup:", soup["eval_loss"], "ingredients:", [(i["run_id"], i["eval_loss"], i["used"]) for i in ing])
    assert soup["eval_loss"] <= ing[0]["eval_loss"]
    used = [i for i in ing if i["used"]]
    assert all(abs(i["weight"] - 1 / len(used)) < 1e-12 for i in used)
    compared = json.loads(go("runs", "compare", soup["run_id"], ids[0], "--json").stdout)
    assert compared["runs"][0]["kind"] == "soup" and compared["curves"][0]["eval"][0][1] == soup["eval_loss"]


def test_soups_refuse_mixed_families_splits_and_repeats(swept, demo_model):
    home, go, final = swept
    first = final["runs"][0]["run_id"]
    common = ["--model", str(demo_model), "--data", str(SAMPLE), "--set", "max_steps=1", "--set", "batch_size=2",
              "--set", "seq_len=128", "--set", "eval_every=0", "--set", "sample_tokens=0", "--json"]
    ia3 = events(go("train", "--method", "ia3", *common).stdout)[-1]["run_id"]
    p = go("soup", first, ia3, check=False)
    assert p.returncode == 1 and "change different things" in p.stderr, p.stderr
    other_split = events(go("train", "--method", "lora", "--set", "seed=9", *common).stdout)[-1]["run_id"]
    p = go("soup", first, other_split, check=False)
    assert p.returncode == 1 and "`split_seed`: 42 vs 9" in p.stderr, p.stderr
    p = go("soup", first, first, check=False)
    assert p.returncode == 1 and "named twice" in p.stderr
    p = go("sweep", "--model", str(demo_model), "--data", str(SAMPLE), "--grid", "lr=1e-4", check=False)
    assert p.returncode == 1 and "at least two runs" in p.stderr
    p = go("sweep", "--model", str(demo_model), "--data", str(SAMPLE), "--method", "dora", "--grid", "seed=1,2",
           "--set", "seq_len=8", check=False)
    assert p.returncode == 1 and "sweep run 1 (seed=1)" in p.stderr, p.stderr
    assert json.loads(go("runs", "sweeps", "--json").stdout)[-1]["id"] == final["sweep"]["id"]


def strip_fence(text):
    t = text.strip()
    if t.startswith("```") and t.endswith("```"):
        t = t[3:-3].strip()
        t = t[4:].strip() if t.startswith("json") else t
    return t


def py_json(text):
    try:
        return json.loads(strip_fence(text))
    except ValueError:
        return None


def test_evaluate_scores_base_and_tuned_answers_on_the_held_out_prompts(swept):
    """The task metrics, recomputed here from the answers; the base answers the same for
    every run of the sweep (one base, one held-out split)."""
    home, go, final = swept
    reports = [json.loads(go("evaluate", r["run_id"], "--limit", "4", "--json").stdout)
               for r in final["runs"][:2]]
    for rep in reports:
        assert [m["metric"] for m in rep["metrics"]] == ["json_valid", "json_fields", "exact_match"]
        assert len(rep["examples"]) == 4 and rep["checkpoint"] in ("best", "last")
        for e in rep["examples"]:
            ref = json.loads(e["reference"])
            for side in ("base", "tuned"):
                answer = e[f"{side}_answer"]
                got = py_json(answer)
                fields = (sum(1 for k, v in ref.items() if isinstance(got, dict) and k in got and got[k] == v)
                          / len(ref))
                want = [float(got is not None), fields, float(answer.strip() == e["reference"].strip())]
                assert e[f"{side}_scores"] == pytest.approx(want), (side, answer)
        for k, m in enumerate(rep["metrics"]):
            for side in ("base", "tuned"):
                mean = sum(e[f"{side}_scores"][k] for e in rep["examples"]) / 4
                assert m[side] == pytest.approx(mean)
    assert [e["base_answer"] for e in reports[0]["examples"]] == [e["base_answer"] for e in reports[1]["examples"]]
    assert [e["reference"] for e in reports[0]["examples"]] == [e["reference"] for e in reports[1]["examples"]]
    run_id = final["runs"][0]["run_id"]
    p = go("evaluate", run_id, "--metric", "regex", check=False)
    assert p.returncode == 1 and "--pattern" in p.stderr
    p = go("evaluate", run_id, "--metric", "bleu", check=False)
    assert p.returncode == 1 and "unknown metric `bleu`" in p.stderr
    regex = json.loads(go("evaluate", run_id, "--metric", "regex", "--pattern", r'^\{"name": ', "--limit", "2",
                          "--json").stdout)
    assert [m["metric"] for m in regex["metrics"]] == ["regex"]
