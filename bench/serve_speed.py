"""`whetstone serve` against llama.cpp's server (llama-cpp-python[server]) on the same GGUF
and the same LoRA adapters, one after the other in the same run, same threads.

Two short LoRA runs on the demo model give two adapters; Whetstone serves them from their
runs, llama.cpp from the GGUF adapters `whetstone export --format gguf` writes. Measured
for each server (greedy, the same prompts):

- time to first token: a streamed request's first content chunk (median of 5);
- tokens/s, 1 client: completion tokens over wall time of a 64-token answer (median of 3);
- tokens/s, 8 concurrent clients: all completion tokens over the wall time of 8 requests;
- adapter switch: the median latency of 1-token requests that each name another adapter
  than the one before, less that of 1-token requests to the adapter just used (Whetstone keeps every adapter
  loaded; llama-cpp-python serves several models from one config file and reloads the
  model when a request names another, which is what its server offers for many adapters);
- memory: the server's resident set with the base only, and per extra adapter (Whetstone:
  added while serving through POST /v1/adapters).

    python bench/serve_speed.py [--threads 2]

Needs WHETSTONE_BIN and WHETSTONE_DEMO_MODEL (as `./dev bench` sets them) and llama-cpp-python
with its server extras in the same Python (`pip install fastapi uvicorn sse-starlette
starlette-context pydantic-settings` next to the llama-cpp-python ./dev builds). Idle machine only.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets/samples/extract.jsonl"
PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how rain forms.",
           "List five uses of a paperclip.", "Describe a busy market in the morning.",
           "Write a poem about the sea.", "Explain what a compiler does.",
           "Tell me about the history of bread.", "Describe your ideal weekend."]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, stream=False, timeout=600):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_ready(url, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode} (its log is next to the runs)")
        try:
            with urllib.request.urlopen(url + "/models", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def chat(url, model, prompt, max_tokens):
    started = time.monotonic()
    with post(url + "/chat/completions", {"model": model, "messages": [{"role": "user", "content": prompt}],
                                          "max_tokens": max_tokens, "temperature": 0}) as r:
        v = json.loads(r.read())
    return v["usage"]["completion_tokens"], time.monotonic() - started


def first_token_s(url, model, prompt):
    started = time.monotonic()
    with post(url + "/chat/completions", {"model": model, "messages": [{"role": "user", "content": prompt}],
                                          "max_tokens": 8, "temperature": 0, "stream": True}) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0].get("delta", {})
            if delta.get("content"):
                return time.monotonic() - started
    return float("nan")


def measure(name, url, pid, models):
    base, a1, a2 = models
    chat(url, a1, PROMPTS[0], 4)  # warm-up
    ttft = statistics.median(first_token_s(url, a1, PROMPTS[i % 8]) for i in range(5))
    one = []
    for i in range(3):
        n, s = chat(url, a1, PROMPTS[i], 64)
        one.append(n / s)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda i: chat(url, (base, a1, a2)[i % 3], PROMPTS[i], 32), range(8)))
    eight = sum(n for n, _ in done) / (time.monotonic() - started)
    # blocks of "same adapter" and "other adapter" requests in turn, so drift hits both
    same, alternating = [], []
    for _ in range(4):
        same += [chat(url, a1, PROMPTS[1], 1)[1] for _ in range(3)]
        alternating += [chat(url, (a2, a1)[i % 2], PROMPTS[1], 1)[1] for i in range(4)][1:]
    same, alternating = statistics.median(same), statistics.median(alternating)
    return {"server": name, "ttft_s": ttft, "tok_s_1": statistics.median(one), "tok_s_8": eight,
            "switch_ms": (alternating - same) * 1e3, "rss_gib": rss_bytes(pid) / 2**30}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", os.cpu_count() or 2)))
    args = ap.parse_args()
    cli, demo = os.environ["WHETSTONE_BIN"], os.environ["WHETSTONE_DEMO_MODEL"]
    home = Path(tempfile.mkdtemp(prefix="whetstone-bench-serve-"))
    env = dict(os.environ, WHETSTONE_HOME=str(home), RAYON_NUM_THREADS=str(args.threads))

    def go(*a):
        return subprocess.run([cli, *a], env=env, capture_output=True, text=True, check=True, timeout=1800).stdout

    runs, ggufs = [], []
    for i, lr in enumerate(("2e-3", "4e-3")):
        out = go("train", "--model", demo, "--data", str(SAMPLE), "--method", "lora", "--set", "max_steps=2",
                 "--set", "batch_size=2", "--set", "seq_len=128", "--set", f"lr={lr}", "--set", f"seed={i + 1}",
                 "--set", "eval_fraction=0.02", "--set", "sample_tokens=0", "--json")
        run_id = json.loads(out.splitlines()[-1])["run_id"]
        runs.append(run_id)
        report = json.loads(go("export", run_id, "--format", "gguf", "--out", str(home / f"gguf-{i}"), "--json"))
        ggufs.append(Path(report["path"]) / "adapter.gguf")
    base = Path(demo).stem
    results = []

    # --- Whetstone: one base, adapters named a1 and a2
    port = free_port()
    proc = subprocess.Popen([cli, "serve", "--model", demo, "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(home / "whetstone-serve.log", "w"))
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc)
        rss_base = rss_bytes(proc.pid)
        per = []
        for name, run_id in zip(("a1", "a2"), runs):
            before = rss_bytes(proc.pid)
            started = time.monotonic()
            post(url + "/adapters", {"name": name, "source": run_id}).read()
            load_ms = (time.monotonic() - started) * 1e3
            per.append((rss_bytes(proc.pid) - before, load_ms))
        r = measure("whetstone serve", url, proc.pid, (base, "a1", "a2"))
        r["rss_base_gib"] = rss_base / 2**30
        r["per_adapter_mib"] = statistics.mean(b for b, _ in per) / 2**20
        r["adapter_load_ms"] = statistics.mean(ms for _, ms in per)
        results.append(r)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # --- llama.cpp: the same GGUF, each adapter as its own model entry of one config file
    port = free_port()
    entry = {"model": demo, "n_threads": args.threads, "n_threads_batch": args.threads, "n_ctx": 2048}
    config = {"host": "127.0.0.1", "port": port, "models": [
        {**entry, "model_alias": base},
        {**entry, "model_alias": "a1", "lora_path": str(ggufs[0])},
        {**entry, "model_alias": "a2", "lora_path": str(ggufs[1])},
    ]}
    cfg = home / "llama-config.json"
    cfg.write_text(json.dumps(config))
    # its log goes to a file: a pipe nobody reads fills up and stalls the server
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--config_file", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(home / "llama-server.log", "w"))
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc)
        chat(url, base, PROMPTS[0], 2)
        rss_base = rss_bytes(proc.pid)
        r = measure("llama.cpp server", url, proc.pid, (base, "a1", "a2"))
        r["rss_base_gib"] = rss_base / 2**30
        r["per_adapter_mib"] = float("nan")
        r["adapter_load_ms"] = float("nan")
        results.append(r)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(f"serve: SmolLM2-135M Q4_1 GGUF, LoRA r8 adapters, {args.threads} threads, greedy")
    print(f"{'server':<18} {'TTFT s':>7} {'tok/s 1':>8} {'tok/s 8':>8} {'switch ms':>10} "
          f"{'RSS GiB':>8} {'base GiB':>9} {'+adapter MiB':>13} {'load ms':>8}")
    for r in results:
        print(f"{r['server']:<18} {r['ttft_s']:>7.2f} {r['tok_s_1']:>8.1f} {r['tok_s_8']:>8.1f} "
              f"{r['switch_ms']:>10.1f} {r['rss_gib']:>8.2f} {r['rss_base_gib']:>9.2f} "
              f"{r['per_adapter_mib']:>13.1f} {r['adapter_load_ms']:>8.1f}")
    w, ll = results
    print(f"ratios (whetstone / llama.cpp): TTFT {w['ttft_s'] / ll['ttft_s']:.2f}x, "
          f"tokens/s 1 client {w['tok_s_1'] / ll['tok_s_1']:.2f}x, 8 clients {w['tok_s_8'] / ll['tok_s_8']:.2f}x")
    print(json.dumps({"serve_bench": results}))


if __name__ == "__main__":
    main()
