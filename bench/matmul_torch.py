"""f32 matmul throughput of PyTorch on this CPU; the twin of engine/examples/bench_matmul.rs."""
import json
import os
import time

import torch

torch.set_flush_denormal(True)
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
for m, k, n in [(1024, 576, 576), (1024, 576, 1536), (1024, 1536, 576), (1024, 576, 192)]:
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    for _ in range(3):
        a @ b
    iters = 50
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    secs = (time.perf_counter() - t) / iters
    print(json.dumps({"system": "torch", "m": m, "k": k, "n": n, "gflops": round(2 * m * k * n / secs / 1e9, 1)}))
