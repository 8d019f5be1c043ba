#!/usr/bin/env bash
# Runs Shoal's GPU tests and benchmarks on a GPU machine from prebuilt binaries (made by
# scripts/gpu-pack.sh) and prints one table. Needs only the NVIDIA driver, CUDA libraries
# (NCCL and cuBLAS, e.g. from PyTorch's pip packages) and PyTorch: no build tools, no
# Debian packages, no package registry.
# Usage: scripts/gpu-check.sh [carry-dir=gpu-carry]   (MLP_BATCH=128 MLP_ITERS=500)
set -uo pipefail

carry=$(cd "${1:-gpu-carry}" 2>/dev/null && pwd) || { echo "gpu-check: no folder ${1:-gpu-carry}; run scripts/gpu-pack.sh first" >&2; exit 2; }
logs=${LOG_DIR:-$carry/logs}
mkdir -p "$logs"
batch=${MLP_BATCH:-128}
iters=${MLP_ITERS:-500}

# 1. Where the machine keeps NCCL, cuBLAS and the CUDA runtime: PyTorch's nvidia-* pip
#    packages first, then CUDA toolkits and the system library path.
pylibs=$(python3 - <<'PY' 2>/dev/null
import glob, os, site, sys
dirs = []
roots = list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()] + sys.path
for r in roots:
    dirs += glob.glob(os.path.join(r, "nvidia", "*", "lib"))
    dirs += glob.glob(os.path.join(r, "nvidia", "cu*", "lib"))  # cu13 wheels nest one level
try:
    import nvidia.nccl
    for p in nvidia.nccl.__path__:
        dirs.append(os.path.join(p, "lib"))
except Exception:
    pass
try:
    import torch
    dirs.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
except Exception:
    pass
seen = []
for d in dirs:
    if os.path.isdir(d) and d not in seen:
        seen.append(d)
print(":".join(seen))
PY
)
cuda_dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/lib/x86_64-linux-gnu 2>/dev/null | tr '\n' ':')
gpu_path="${pylibs:+$pylibs:}${cuda_dirs%:}"
export LD_LIBRARY_PATH="$carry/lib:$gpu_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

missing=()
while read -r lib; do
  [ -z "$lib" ] && continue
  found=""
  IFS=: read -ra dirs <<< "$gpu_path"
  for d in "${dirs[@]}"; do [ -e "$d/$lib" ] && { found="$d/$lib"; break; }; done
  [ -z "$found" ] && ldconfig -p 2>/dev/null | grep -q "$lib" && found="(ld.so.cache)"
  [ -z "$found" ] && missing+=("$lib")
  echo "gpu-check: $lib -> ${found:-NOT FOUND}"
done < "$carry/gpu-libs-needed.txt"
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu-check: missing ${missing[*]}. The binaries were built with $(tail -n1 "$carry/BUILD-INFO.txt");" \
       "install a PyTorch build for the same CUDA major (its nvidia-* wheels carry these) or point" \
       "LD_LIBRARY_PATH at a CUDA toolkit of that major." >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu-check: GPU /' ||
  echo "gpu-check: nvidia-smi shows no GPU: the GPU tests will skip and the benchmarks print SKIP"

# 2. Run natively if this glibc is new enough, else through the carried loader.
run() {
  local bin="$carry/bin/$1"; shift
  if [ -n "${use_loader:-}" ]; then
    "$carry/glibc/ld-linux-x86-64.so.2" --library-path "$carry/glibc:$LD_LIBRARY_PATH" "$bin" "$@"
  else
    "$bin" "$@"
  fi
}
use_loader=${FORCE_LOADER:-}
if [ -z "$use_loader" ] && ! "$carry/bin/gpu_util_test" --gtest_list_tests >/dev/null 2>"$logs/native-probe.txt"; then
  echo "gpu-check: native start failed ($(head -n1 "$logs/native-probe.txt")); using the carried glibc loader"
  use_loader=1
fi

# 3. Tests.
rows=()
failed=0
for t in $(ls "$carry/bin" | grep _test$); do
  run "$t" > "$logs/$t.txt" 2>&1
  rc=$?
  pass=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$logs/$t.txt" | tail -n1)
  skip=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$logs/$t.txt" | tail -n1)
  fail=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$logs/$t.txt" | tail -n1)
  [ "$rc" -ne 0 ] && failed=1
  rows+=("$(printf '%-34s %8s %8s %8s  %s' "$t" "${pass:-0}" "${skip:-0}" "${fail:-0}" "$([ "$rc" -eq 0 ] && echo ok || echo "FAIL rc=$rc")")")
done
abort_s=$(sed -n 's/^RESULT nccl_abort_seconds \([0-9.]*\).*/\1/p' "$logs/nccl_gpu_test.txt")

# 4. Benchmarks: codec kernels vs device-to-device copy, GPU MLP vs PyTorch, same run.
run gpu_codec_bench > "$logs/gpu_codec_bench.txt" 2>&1 || failed=1
run cuda_mlp_bench "$batch" "$iters" > "$logs/cuda_mlp_bench.txt" 2>&1 || failed=1
python3 - "$batch" "$iters" > "$logs/torch_mlp.txt" 2>&1 <<'PY' || failed=1
# The same MLP, batch, optimizer step and loss read-back as cuda_mlp_bench, in PyTorch.
import sys, time, torch
batch, iters = int(sys.argv[1]), int(sys.argv[2])
torch.backends.cuda.matmul.allow_tf32 = False  # Shoal's sgemm is plain f32 (no TF32)
dev = torch.device("cuda")
layers = [784, 256, 128, 10]
mods = []
for i in range(len(layers) - 1):
    mods.append(torch.nn.Linear(layers[i], layers[i + 1]))
    if i + 2 < len(layers):
        mods.append(torch.nn.ReLU())
model = torch.nn.Sequential(*mods).to(dev)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
g = torch.Generator().manual_seed(3)
xh = torch.rand(batch, layers[0], generator=g).pin_memory()
yh = torch.randint(0, layers[-1], (batch,), generator=g).pin_memory()
def step():
    x, y = xh.to(dev, non_blocking=True), yh.to(dev, non_blocking=True)  # batch from pinned memory, as Shoal
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
    (loss / batch).backward()
    opt.step()
    return loss.item()  # the trainer reads the loss every step; so does Shoal's bench
for _ in range(50):
    step()
ts = []
for _ in range(iters):
    t0 = time.perf_counter()
    step()
    ts.append((time.perf_counter() - t0) * 1e6)
ts.sort()
print("RESULT torch_step_us %.1f p10 %.1f p90 %.1f" % (ts[len(ts) // 2], ts[len(ts) // 10], ts[len(ts) * 9 // 10]))
print("torch %s, CUDA %s, %s" % (torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0)))
PY

# 5. One table.
echo
echo "== Shoal GPU check: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1) =="
printf '%-34s %8s %8s %8s  %s\n' "test binary" passed skipped failed status
printf '%s\n' "${rows[@]}"
echo "nccl: peer-never-arrives abort took ${abort_s:-n/a} s (timeout 5 s)"
echo
printf '%-34s %10s %12s  %s\n' "codec kernel" "GB/s" "vs D2D copy" ">= 0.70"
while read -r _ name gbs ratio; do
  ok=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.70) ? "yes" : "NO" }')
  [ "$name" = copy_d2d ] && ok="(reference)"
  printf '%-34s %10s %12s  %s\n' "$name" "$gbs" "$ratio" "$ok"
done < <(grep '^RESULT' "$logs/gpu_codec_bench.txt")
shoal_us=$(sed -n 's/^RESULT mlp_step_us \([0-9.]*\).*/\1/p' "$logs/cuda_mlp_bench.txt")
torch_us=$(sed -n 's/^RESULT torch_step_us \([0-9.]*\).*/\1/p' "$logs/torch_mlp.txt")
echo
printf '%-34s %10s\n' "MLP 784-256-128-10, batch $batch" "median us"
printf '%-34s %10s\n' "shoal CudaMlpModel" "${shoal_us:-n/a}" "pytorch $(sed -n 's/^torch \([^,]*\),.*/\1/p' "$logs/torch_mlp.txt")" "${torch_us:-n/a}"
if [ -n "$shoal_us" ] && [ -n "$torch_us" ]; then
  awk -v s="$shoal_us" -v t="$torch_us" 'BEGIN { printf "%-34s %10.2f  (>= 1.00: Shoal at least as fast)\n", "speed ratio torch/shoal", t / s }'
fi
echo "logs: $logs"
exit $failed
