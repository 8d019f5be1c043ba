#!/usr/bin/env bash
# Accuracy for bytes: trains the example job with every codec on the same seed and data
# and prints final test accuracy and bytes on the wire per worker against `none`.
#   bench/codec_accuracy.sh [WORKERS=4] [EPOCHS=3] [SEEDS="42"]
# Set SHOAL_EMULATE_BANDWIDTH_MBPS=100 to emulate slow links (Gloo backend).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-4}; EPOCHS=${2:-3}; SEEDS=${3:-42}
BIN=$PWD/build/bin
field() { grep -o "\"$1\": *[-0-9.e+]*" "$2" | head -1 | sed 's/.*: *//'; }
printf "%-9s %5s %9s %14s %14s %9s %8s\n" codec seed accuracy sent_B uncompressed_B ratio wall_s
for seed in $SEEDS; do
  for codec in none bf16 fp16 powersgd qblock topk; do
    dir=$(mktemp -d)
    (cd "$dir" && "$BIN/shoalctl" run "$OLDPWD/examples/fashion-mnist.yaml" --quiet --json --workers "$WORKERS" \
      --set collectives.codec=$codec --set collectives.backend=gloo --set training.seed=$seed \
      --set training.epochs=$EPOCHS > out.json 2>err.log) || { echo "$codec failed: $(tail -2 $dir/err.log)"; continue; }
    acc=$(field final_test_accuracy $dir/out.json); sent=$(field bytes_sent_per_worker $dir/out.json)
    unc=$(field bytes_uncompressed_per_worker $dir/out.json); wall=$(field wall_seconds $dir/out.json)
    printf "%-9s %5s %9.4f %14s %14s %8.1fx %8.1f\n" $codec $seed $acc $sent $unc $(echo "$unc / $sent" | bc -l) $wall
    rm -rf "$dir"
  done
done
