#!/usr/bin/env bash
# Prepares the example job's training data once (idempotent): a data-owner key pair in
# .shoal/keys/, Fashion-MNIST's IDX files ingested into signed record shards in
# data/fashion-mnist/, and a poisoning scan of them. Nothing is redone when present;
# a folder that exists but fails verification is reported, never silently replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
SHOALCTL=build/bin/shoalctl
SRC=/usr/share/datasets/fashion-mnist
KEYS=.shoal/keys
OUT=data/fashion-mnist

[ -f "$KEYS/data-owner.key" ] || "$SHOALCTL" keygen --out "$KEYS" --name data-owner
if [ ! -f "$OUT/manifest.pb" ]; then
  "$SHOALCTL" data ingest --format idx --images "$SRC/train-images-idx3-ubyte.gz" \
    --labels "$SRC/train-labels-idx1-ubyte.gz" --out "$OUT" --sign-key "$KEYS/data-owner.key" \
    --name fashion-mnist --licence MIT --source "debian:dataset-fashion-mnist"
fi
# Scanned every time (about a second): a scan by an older version of the filters is
# refused by jobs (they check that the scan ran what their data.filters say).
"$SHOALCTL" data scan "$OUT" --trust "$KEYS/data-owner.pub"
"$SHOALCTL" data verify "$OUT" --trust "$KEYS/data-owner.pub" > /dev/null
