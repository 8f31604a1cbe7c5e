"""`whetstone serve` against the official `openai` client, on the real SmolLM2 GGUF: one base
with two adapters (a Whetstone LoRA run and a PEFT-made LoRA), greedy answers equal to
`whetstone chat`, streaming, OpenAI-shaped errors, 8 concurrent clients, adapters added and
removed while serving, and a client that leaves mid-stream freeing the model."""
import json
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import torch

from test_train import events

SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "samples" / "extract.jsonl"
KEY = "sk-whetstone-test"
PROMPTS = ["What is the capital of France?", "Name three colours.", "Write one word about rain."]


def peft_made_lora(demo_model: Path, out: Path) -> Path:
    """A LoRA made by PEFT itself on the same base (transformers reads the GGUF), with B
    drawn at random so it changes the answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(demo_model.parent, gguf_file=demo_model.name,
                                                dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                                            lora_dropout=0.0))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory, whetstone_bin, demo_model):
    tmp = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "WHETSTONE_HOME": str(tmp / "home")}
    env.pop("WHETSTONE_API_KEY", None)

    def go(*args, timeout=900):
        r = subprocess.run([whetstone_bin, *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, r.stderr
        return r.stdout

    run_id = events(go("train", "--model", str(demo_model), "--data", str(SAMPLE), "--method", "lora",
                       "--set", "max_steps=3", "--set", "batch_size=2", "--set", "seq_len=128",
                       "--set", "lr=5e-3", "--set", "eval_fraction=0.02", "--set", "sample_tokens=0",
                       "--json"))[-1]["run_id"]
    peft_dir = peft_made_lora(demo_model, tmp / "peft-lora")
    proc = subprocess.Popen([whetstone_bin, "serve", "--model", str(demo_model), "--adapter", f"tuned={run_id}",
                             "--adapter", f"peft={peft_dir}", "--port", "0", "--api-key", KEY, "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        ready = json.loads(lines.get(timeout=120))
    except queue.Empty:
        proc.kill()
        pytest.fail(f"the server did not start: {proc.stderr.read()}")
    base = Path(demo_model).stem
    client = openai.OpenAI(base_url=ready["url"], api_key=KEY, max_retries=0, timeout=300)
    yield {"url": ready["url"], "ready": ready, "client": client, "go": go, "run_id": run_id,
           "peft": peft_dir, "base": base, "adapters": {base: "base", "tuned": run_id, "peft": str(peft_dir)}}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the server did not stop on SIGTERM within 20 s")


def greedy(client, model, prompt, max_tokens=24):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=max_tokens, temperature=0)
    return r.choices[0].message.content, r.model_extra["whetstone"]["token_ids"], r


@pytest.fixture(scope="module")
def lone(served):
    """Each model's greedy answer to each prompt, asked alone."""
    return {(m, p): greedy(served["client"], m, p)[:2] for m in served["adapters"] for p in PROMPTS}


def test_models_lists_the_base_and_every_adapter(served):
    ids = {m.id for m in served["client"].models.list()}
    assert ids == set(served["adapters"])
    assert served["client"].models.retrieve("tuned").id == "tuned"


def test_greedy_answers_equal_whetstone_chat_token_for_token(served, lone):
    prompt = PROMPTS[0]
    answers = {}
    for model, adapter in served["adapters"].items():
        out = json.loads(served["go"]("chat", "--model", str(served["ready"]["models"][0]["source"]),
                                      "--adapter", adapter, prompt, "--temperature", "0",
                                      "--repetition-penalty", "1", "--max-tokens", "24", "--json"))
        text, ids = lone[(model, prompt)]
        assert ids == out["token_ids"], model
        assert text == out["text"], model
        answers[model] = ids
    for adapter in ("peft", "tuned"):
        assert any(lone[(adapter, p)][1] != lone[(served["base"], p)][1] for p in PROMPTS), \
            f"the {adapter} adapter changed no answer"


def test_usage_counts_and_finish_reasons(served):
    text, ids, r = greedy(served["client"], "peft", PROMPTS[1], max_tokens=3)
    assert r.choices[0].finish_reason == "length" and len(ids) == 3
    assert r.usage.completion_tokens == 3 and r.usage.total_tokens == r.usage.prompt_tokens + 3
    r = served["client"].chat.completions.create(model=served["base"], max_tokens=40, temperature=0,
                                                 messages=[{"role": "user", "content": PROMPTS[0]}], stop=["Paris"])
    assert r.choices[0].finish_reason == "stop" and "Paris" not in r.choices[0].message.content


def test_streaming_gives_the_same_answer_in_openai_chunks(served, lone):
    stream = served["client"].chat.completions.create(
        model="tuned", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=24, temperature=0,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == lone[("tuned", PROMPTS[0])][0]
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].usage.completion_tokens == len(lone[("tuned", PROMPTS[0])][1])


def test_completions_take_a_plain_prompt_like_chat_raw(served):
    r = served["client"].completions.create(model="peft", prompt="The sky is", max_tokens=12, temperature=0)
    out = json.loads(served["go"]("chat", "--model", served["ready"]["models"][0]["source"], "--adapter",
                                  str(served["peft"]), "The sky is", "--raw", "--temperature", "0",
                                  "--repetition-penalty", "1", "--max-tokens", "12", "--json"))
    assert r.choices[0].text == out["text"]
    assert r.usage.completion_tokens == len(out["token_ids"])
    pieces = served["client"].completions.create(model="peft", prompt="The sky is", max_tokens=12,
                                                 temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in pieces) == out["text"]


def test_sampling_with_a_seed_repeats(served):
    ask = dict(model="tuned", messages=[{"role": "user", "content": PROMPTS[2]}], max_tokens=16,
               temperature=1.0, top_p=0.95, seed=11)
    a = served["client"].chat.completions.create(**ask).choices[0].message.content
    b = served["client"].chat.completions.create(**ask).choices[0].message.content
    assert a == b


def raw_post(url, body: bytes, key=KEY):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                          "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_errors_have_openai_shape_and_status(served):
    c = served["client"]
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=served["url"], api_key="wrong", max_retries=0).models.list()
    assert e.value.status_code == 401
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tuned", messages=[{"role": "user", "content": "x "}], temperature=5)
    assert e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tuned", messages=[{"role": "user", "content": "word " * 9000}])
    assert e.value.code == "context_length_exceeded" and "8192" in e.value.message
    status, body = raw_post(served["url"] + "/chat/completions", b'{"model": "tuned", "messages": [')
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = raw_post(served["url"] + "/chat/completions", b'{"messages": [{"role": "user", "content": "x"}]}')
    assert status == 400 and body["error"]["param"] == "model" and "model" in body["error"]["message"]
    assert set(body["error"]) >= {"message", "type", "code"}


def test_eight_concurrent_clients_each_get_what_a_lone_request_gets(served, lone):
    models = list(served["adapters"])
    jobs = [(models[i % len(models)], PROMPTS[i % len(PROMPTS)]) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda j: greedy(served["client"], *j)[:2], jobs))
    for job, answer in zip(jobs, got):
        assert answer == lone[job], job


def test_adapters_are_added_and_removed_while_serving(served, lone):
    status, body = raw_post(served["url"] + "/adapters",
                            json.dumps({"name": "again", "source": served["run_id"]}).encode())
    assert status == 201 and body["id"] == "again", body
    assert "again" in {m.id for m in served["client"].models.list()}
    assert greedy(served["client"], "again", PROMPTS[0])[:2] == lone[("tuned", PROMPTS[0])]
    status, body = raw_post(served["url"] + "/adapters", json.dumps({"name": "x", "source": "/no/such"}).encode())
    assert status == 400 and body["error"]["param"] == "source"
    req = urllib.request.Request(served["url"] + "/adapters/again", method="DELETE",
                                 headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.loads(r.read())["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        served["client"].chat.completions.create(model="again", messages=[{"role": "user", "content": "x"}])


def test_a_client_that_leaves_mid_stream_frees_the_model(served):
    c = served["client"]
    stream = c.chat.completions.create(model=served["base"], messages=[{"role": "user", "content":
                                       "Write a very long story about a dragon."}], max_tokens=2000,
                                       temperature=1.0, seed=1, stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    started = time.monotonic()
    _, _, r = greedy(c, "peft", PROMPTS[1], max_tokens=4)
    waited = r.model_extra["whetstone"]["queue_s"]
    # 2000 tokens take minutes on a CPU; the next request waits for a token or two at most
    assert waited < 5, f"the next request queued {waited:.1f}s behind an abandoned stream"
    assert time.monotonic() - started < 60
