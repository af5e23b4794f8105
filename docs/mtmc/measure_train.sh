#!/usr/bin/env bash
# The held-out MTMC measurement of docs/mtmc.md, step 1: a small synthetic training set and two tiny ReID models
# (RGB only, and pose-aware with a pose model trained on the same set), on the CPU in a few minutes.
# Usage: bash docs/mtmc/measure_train.sh WORKDIR   (then: python docs/mtmc/measure_eval.py WORKDIR)
set -euo pipefail
W=${1:?work folder}
P="python -m pamtri"
mkdir -p "$W"
[ -f "$W/data/synth.json" ] || $P synth --out "$W/data" --seed 7 --ids 80 --images-per-id 10 --size 96 --style synthetic --cameras 4 \
    --test-fraction 0.25 --no-progress
SRC="{root: $W/data, format: synthetic, split: train}"
VAL="{root: $W/data, format: synthetic, split: test}"
$P pose train --config configs/pose/demo.yaml --out "$W/pose" --set "data.train=[$SRC]" --set "data.val=[$VAL]" \
    --set optim.epochs=4 --set "optim.milestones=[3]" --set eval.every=4
for split in train query test; do
  $P cache build --pose-weights "$W/pose/best.pt" --data "$W/data" --split $split --out "$W/cache/$split"
done
TRAIN="{root: $W/data, split: train, domain: real, pose_cache: $W/cache/train}"
for label in rgb pose; do
  $P reid train --config configs/reid/demo_$label.yaml --out "$W/reid_$label" --set "data.train=[$TRAIN]" \
      --set data.eval_root="$W/data" --set data.query_cache="$W/cache/query" \
      --set data.gallery_cache="$W/cache/test" --set optim.epochs=8 --set "optim.milestones=[6]" --set eval.every=8
done
