#!/usr/bin/env bash
# Build `whetstone` with --features cuda on a machine without a GPU or a CUDA install, for a
# GPU machine that has the driver and CUDA 13 libraries but no Rust toolchain.
#
#   bench/gpu/build_cuda.sh [OUT_DIR]     -> OUT_DIR/whetstone.xz (default .gpu/, git-ignored)
#
# nvcc, its headers and CCCL come from PyPI, pinned to 13.0 so the PTX runs on a 580 driver
# (CUDA 13.0); cudarc links libcuda/libcublas/libcurand/libcudart, which are absent here, so
# the link uses stub libraries with the right sonames and the real ones load on the GPU host.
# On that host: LD_LIBRARY_PATH=/usr/local/cuda/lib64 ./whetstone doctor
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-.gpu}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/whetstone"
VENV="${NVCC_VENV:-$CACHE/nvcc-13.0}"
CAP="${CUDA_COMPUTE_CAP:-90}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.96" \
    "nvidia-cuda-cccl==13.0.85" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88"
fi
CUDA="$(ls -d "$VENV"/lib/python3*/site-packages/nvidia/cu13)"
export CUDA_ROOT="$CUDA" CUDA_PATH="$CUDA" CUDA_TOOLKIT_ROOT_DIR="$CUDA" PATH="$CUDA/bin:$PATH"
export CUDA_COMPUTE_CAP="$CAP" CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$CACHE/target-cuda}"
STUBS="$CACHE/cuda-stubs"
mkdir -p "$STUBS" "$OUT"
# 1. find the symbols the binary needs from each library (link against empty stubs)
: > "$STUBS/empty.c"
for n in cuda nvrtc curand cublas cublasLt cudart; do
  gcc -shared -fPIC -o "$STUBS/lib$n.so" "$STUBS/empty.c"
done
cargo build -p whetstone-cli --features cuda 2>/dev/null || true
cargo rustc -p whetstone-cli --bin whetstone --features cuda -- -L "$STUBS" -C link-arg=-Wl,--error-limit=0 2>&1 |
  grep -o 'undefined symbol: [A-Za-z0-9_]*' | sed 's/undefined symbol: //' | sort -u > "$STUBS/symbols.txt" || true
# 2. stubs that define them, named as the real libraries' sonames
python3 - "$STUBS" <<'PY'
import sys
from pathlib import Path
d = Path(sys.argv[1])
groups = {k: [] for k in ("cuda", "nvrtc", "curand", "cublasLt", "cublas", "cudart")}
for s in (d / "symbols.txt").read_text().split():
    for prefix, g in (("nvrtc", "nvrtc"), ("curand", "curand"), ("cublasLt", "cublasLt"), ("cublas", "cublas"),
                      ("__cuda", "cudart"), ("cuda", "cudart"), ("cu", "cuda")):
        if s.startswith(prefix):
            groups[g].append(s)
            break
    else:
        sys.exit(f"unexpected symbol {s}")
for g, syms in groups.items():
    (d / f"{g}.c").write_text("".join(f"void {s}(void) {{}}\n" for s in syms))
PY
for pair in cuda:libcuda.so.1 nvrtc:libnvrtc.so.13 curand:libcurand.so.10 cublas:libcublas.so.13 \
  cublasLt:libcublasLt.so.13 cudart:libcudart.so.13; do
  n=${pair%%:*}; so=${pair#*:}
  gcc -shared -fPIC -o "$STUBS/lib$n.so" -Wl,-soname,"$so" "$STUBS/$n.c"
done
# 3. link for real and pack
cargo rustc -p whetstone-cli --bin whetstone --features cuda -- -L "$STUBS"
strip -o "$OUT/whetstone" "$CARGO_TARGET_DIR/debug/whetstone"
xz -T0 -6 -f "$OUT/whetstone"
ls -l "$OUT/whetstone.xz"
