#!/usr/bin/env bash
# Builds Shoal's GPU test and benchmark binaries here and packs them, with the non-CUDA
# shared libraries they load (per ldd), into gpu-carry/ (under 64 MiB) for
# scripts/gpu-check.sh on a GPU machine that has none of our Debian packages.
#
# CUDA, cuBLAS, NCCL and the driver (libcuda, libnvidia*, libcublas*, libnccl*,
# libcudart*) are NOT packed: the GPU machine's own copies are used. glibc (libc, libm,
# the loader) goes into gpu-carry/glibc/, used only if the machine's glibc is older.
# Usage: scripts/gpu-pack.sh [out-dir=gpu-carry]   (BUILD=build-gpu JOBS=1 by default)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build-gpu}
out=${1:-$root/gpu-carry}
jobs=${JOBS:-1}
limit_mib=64
tests="gpu_util_test nccl_test nccl_gpu_test gpu_codec_host_test gpu_codec_test gpu_codec_twin_test cuda_mlp_host_test cuda_mlp_test"
benches="gpu_codec_bench cuda_mlp_bench"

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
grep -q '#define SHOAL_HAVE_NCCL 1' "$build/generated/shoal/config.h" ||
  { echo "gpu-pack: this build has no CUDA/NCCL (see cmake output); nothing to pack" >&2; exit 1; }
# shellcheck disable=SC2086
nice cmake --build "$build" --target $tests $benches -j"$jobs"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/glibc"
for t in $tests $benches; do
  bin=$(find "$build" -type f -name "$t" -perm -u+x | head -n1)
  [ -n "$bin" ] || { echo "gpu-pack: built target $t not found under $build" >&2; exit 1; }
  cp "$bin" "$out/bin/$t"
  strip --strip-unneeded "$out/bin/$t" 2>/dev/null || true
done

# Libraries: everything ldd resolves, minus what the GPU machine must provide itself.
gpu_owned='^(libcuda\.|libnvidia|libcublas|libcublasLt|libnccl|libcudart|linux-vdso)'
glibc_owned='^(libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|ld-linux)'
: > "$out/gpu-libs-needed.txt"
for b in "$out"/bin/*; do
  ldd "$b" | while read -r name arrow path _; do
    if [ "$arrow" != "=>" ]; then  # the loader line: "/lib64/ld-linux-x86-64.so.2 (0x...)"
      case "$name" in /*ld-linux*) cp -nL "$name" "$out/glibc/" ;; esac
      continue
    fi
    if [[ "$name" =~ $gpu_owned ]]; then
      echo "$name" >> "$out/gpu-libs-needed.txt"
    elif [ "$path" = "not" ]; then
      echo "gpu-pack: $b needs $name, which ldd cannot find here" >&2; exit 1
    elif [[ "$name" =~ $glibc_owned ]]; then
      cp -nL "$path" "$out/glibc/$name"
    else
      cp -nL "$path" "$out/lib/$name"
    fi
  done
done
sort -u -o "$out/gpu-libs-needed.txt" "$out/gpu-libs-needed.txt"
strip --strip-unneeded "$out"/lib/*.so* 2>/dev/null || true
cp "$root/scripts/gpu-check.sh" "$out/"
{
  echo "built $(date -u +%FT%TZ) on $(uname -m) from $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "glibc here: $(ldd --version | head -n1)"
  /usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -n1 || true
} > "$out/BUILD-INFO.txt"

size_kib=$(du -sk "$out" | cut -f1)
echo "gpu-pack: $out holds $(ls "$out/bin" | wc -l) binaries, $(ls "$out/lib" | wc -l) libraries, $((size_kib / 1024)) MiB"
echo "gpu-pack: the GPU machine must provide: $(tr '\n' ' ' < "$out/gpu-libs-needed.txt")"
if [ "$size_kib" -gt $((limit_mib * 1024)) ]; then
  echo "gpu-pack: over the ${limit_mib} MiB limit" >&2
  exit 1
fi
