#!/usr/bin/env bash
# Accuracy for bytes: trains the example job with every codec on the same seed and data
# and prints final test accuracy and gradient bytes on the wire per worker against what
# an uncompressed f32 ring would send; then, per codec, the mean over the seeds.
#   bench/codec_accuracy.sh [WORKERS=4] [EPOCHS=3] [SEEDS="42"]
# CODECS="none bf16 fp16 powersgd qblock qblock4 topk" picks the codecs (qblock4 is qblock
# with qblock_bits=4); EXTRA="--set k=v ..." is passed to every run.
# Set SHOAL_EMULATE_BANDWIDTH_MBPS=100 to emulate slow links (Gloo backend; the same as the
# spec's collectives.emulate_bandwidth_mbps).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-4}; EPOCHS=${2:-3}; SEEDS=${3:-42}
CODECS=${CODECS:-none bf16 fp16 powersgd qblock qblock4 topk}
BIN=$PWD/build/bin
field() { grep -o "\"$1\": *[-0-9.e+]*" "$2" | head -1 | sed 's/.*: *//'; }
rows=$(mktemp)
printf "%-9s %5s %9s %14s %14s %14s %9s %8s\n" codec seed accuracy sent_B grad_sent_B uncompressed_B ratio wall_s
for seed in $SEEDS; do
  for variant in $CODECS; do
    case $variant in
      qblock4) sets="--set collectives.codec=qblock --set collectives.qblock_bits=4" ;;
      *) sets="--set collectives.codec=$variant" ;;
    esac
    dir=$(mktemp -d)
    # shellcheck disable=SC2086  # $sets and $EXTRA are lists of arguments
    (cd "$dir" && "$BIN/shoalctl" run "$OLDPWD/examples/fashion-mnist.yaml" --quiet --json --workers "$WORKERS" \
      $sets --set collectives.backend=gloo --set training.seed=$seed \
      --set training.epochs=$EPOCHS ${EXTRA:-} > out.json 2>err.log) || { echo "$variant failed: $(tail -2 $dir/err.log)"; continue; }
    acc=$(field final_test_accuracy $dir/out.json); sent=$(field bytes_sent_per_worker $dir/out.json)
    grad=$(field gradient_bytes_sent_per_worker $dir/out.json)
    unc=$(field bytes_uncompressed_per_worker $dir/out.json); wall=$(field wall_seconds $dir/out.json)
    ratio=$(echo "$unc / $grad" | bc -l)
    printf "%-9s %5s %9.4f %14s %14s %14s %8.1fx %8.1f\n" $variant $seed $acc $sent $grad $unc $ratio $wall
    echo "$variant $acc $ratio" >> "$rows"
    rm -rf "$dir"
  done
done
echo
echo "mean over seeds ($SEEDS):"
awk '{n[$1]++; a[$1]+=$2; r[$1]+=$3; if (!($1 in order)) {order[$1]=++k; name[k]=$1}}
     END {for (i=1;i<=k;i++) {c=name[i]; d=(("none" in a) ? 100*(a[c]/n[c]-a["none"]/n["none"]) : 0);
          printf "%-9s accuracy %.4f  delta vs none %+.2f points  %.1fx fewer gradient bytes\n", c, a[c]/n[c], d, r[c]/n[c]}}' "$rows"
rm -f "$rows"
