#!/usr/bin/env bash
# `make demo`: the main job end to end on built-in defaults — no network, no data files.
# Checks and formats the zoo, prints a model report, trains LeNet-5 on the built-in `shapes`
# data set (generated 28×28 images of 10 shape kinds), evaluates it, and draws the model.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=runs/demo
mkdir -p "$OUT"
echo "== dlspec check specs/*.dl"
$BIN/dlspec check specs/*.dl
echo "== dlspec fmt --check specs/*.dl"
$BIN/dlspec fmt --check specs/*.dl && echo "all specs are formatted"
echo "== dlspec compile specs/lenet5.dl"
$BIN/dlspec compile specs/lenet5.dl --batch 64
echo "== dlspec train specs/lenet5.dl --data shapes (built-in data, 6 epochs on 6,000 images, Adam)"
$BIN/dlspec train specs/lenet5.dl --data shapes --epochs 6 --batch 64 --optimizer adam --lr 0.005 --out "$OUT" --quiet
run=$(ls -td "$OUT"/LeNet5-* | head -n 1)
echo "== dlspec eval (the run's best weights on the test split)"
$BIN/dlspec eval specs/lenet5.dl --weights "$run/best.safetensors" --data shapes
echo "== dlspec draw specs/lenet5.dl"
$BIN/dlspec draw specs/lenet5.dl -o "$OUT/lenet5.svg"
echo "demo done: run directory $run, diagram $OUT/lenet5.svg"
