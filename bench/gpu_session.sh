#!/usr/bin/env bash
# The one prepared GPU call for the adapter and recipe benchmarks, sized for a lease of 15 minutes
# of device time in which one command may run 10 (the machine's start and the transfers come out
# of the same 15). Every stage has a deadline derived from SESSION_S, so the whole script ends
# inside it, and every benchmark rewrites its JSON after each setting, so a stage cut short still
# leaves what it measured.
#
#   here, once:  bench/device_wheels.sh      (optional: DeepSpeed for the GPU recipe test and the
#                                              ZeRO-2 setting; without it those are skipped)
#   device call: command "bash bench/gpu_session.sh", carry [".whl"], timeout_s 600
#   elsewhere:   OUT=gpu_out bash bench/gpu_session.sh   (any CUDA machine with torch + transformers)
#   rehearsal:   REHEARSE=1 PYTHON=.venv/bin/python bash bench/gpu_session.sh   (CPU, tiny models:
#                checks this script's plumbing before device time is spent on it)
#
# Writes to $OUT (8 files, the device tool's limit): env.txt, gpu_tests.log, eval.json, eval.log,
# eval_profile.txt, train.json, train_recipe.json, train.log. Figures go to docs/performance.md with
# the card and the date. Exits 1 when a stage failed (a non-zero exit or a timeout; the last line
# names them), so a session that measured nothing cannot pass for one that did.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SESSION_S=${SESSION_S:-580}     # the whole script; the device tool's command limit is 600
EVAL_S=${EVAL_S:-230}           # eval_throughput.py: no new setting starts after this
TRAIN_S=${TRAIN_S:-80}          # train_throughput.py: likewise
RECIPE_S=${RECIPE_S:-60}        # train_throughput.py --recipe (with the carried DeepSpeed wheels): no training starts after (its checkpoint and records written first)
TESTS_S=${TESTS_S:-120}         # GPU tests (fp16 batch equality, static cache, the recipe on CUDA), last
TINY=()
[[ ${REHEARSE:-0} == 1 ]] && TINY=(--tiny)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# Seconds left before the session deadline, capped at $1 (never below 10).
left() { local l=$((SESSION_S - SECONDS)); ((l > $1)) && l=$1; ((l < 10)) && l=10; echo "$l"; }

# No pip install on that machine: the repository root is on PYTHONPATH, and pulse_training (the
# installed name of training/, see pyproject's package-dir) is a link in a scratch site folder
# that also takes the carried wheels.
site=$(mktemp -d)
ln -s "$PWD/training" "$site/pulse_training"
if compgen -G ".whl/*.whl" >/dev/null; then
    # pip's messages are captured and summarised in one line, so they cannot land out of order
    # after the stage lines (the log's last line names the failed stages).
    if ! pip_out=$("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
            .whl/*.whl 2>&1); then
        echo "carried wheels did not install ($(tail -n 1 <<<"$pip_out")): DeepSpeed stages will be skipped"
    fi
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"

{
    date -u '+%Y-%m-%d %H:%M UTC'
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
    "$PY" -c 'import sys, torch, transformers; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda); print("transformers", transformers.__version__)'
    "$PY" -c 'import deepspeed; print("deepspeed", deepspeed.__version__)' 2>&1 | tail -1
    nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
HAVE_DS=0
"$PY" -c 'import deepspeed' >/dev/null 2>&1 && HAVE_DS=1
FAILED=()
# Record a stage's exit status ($2); a non-zero one (124: its timeout) marks the session failed.
stage() { echo "$1 exit $2"; (($2 == 0)) || FAILED+=("$1 ($2)"); }

echo "== evaluation throughput"
# A phase split and a kernel table of one batch of 16 first; then the reference protocol on fewer
# items (it is the slow one) and the adapter at batch 32, dynamic KV cache for both workloads
# before the static one (see plan_settings). A setting in progress at the budget finishes (up to
# ~90 s more, a compile included): the hard timeout leaves room for it.
# Last, inside the same budget: the vLLM setting on the same items (our plugin; skipped, with the
# reason in eval.json's "vllm" entry, where vllm is not importable, as on a bare device machine).
timeout "$(left $((EVAL_S + 100)))" "$PY" bench/eval_throughput.py "${TINY[@]}" --time-budget "$EVAL_S" \
    --items short=128,report=64 --reference-items short=24,report=4 --batch-sizes 32 --caches dynamic,static \
    --phases 16 --profile "$OUT/eval_profile.txt" --vllm --json "$OUT/eval.json" >"$OUT/eval.log" 2>&1
stage eval $?
grep -v "^\s*$" "$OUT/eval.log" | tail -n 25

echo "== training throughput"
# The recipe's settings (micro-batch 2, checkpointing), then the levers: every 2nd layer
# checkpointed, checkpointing off, micro-batch 4, regional compile.
timeout "$(left $((TRAIN_S + 60)))" "$PY" bench/train_throughput.py "${TINY[@]}" --time-budget "$TRAIN_S" \
    --settings 2+ckpt,2+ckpt/2,2,4,4+compile --json "$OUT/train.json" >"$OUT/train.log" 2>&1
stage train $?
# The recipe's real path (pulse_7b.yaml through PulseTrainer and DeepSpeed ZeRO-2, ECG records with
# images on disk): 2 warm-up and 4 timed optimizer steps of 16 samples, after writing the random
# checkpoint (about 4 GB) it loads.
if ((HAVE_DS)); then
    timeout "$(left 200)" "$PY" bench/train_throughput.py "${TINY[@]}" --recipe --warmup 2 --steps 4 \
        --set global_batch_size=16 --time-budget "$RECIPE_S" --json "$OUT/train_recipe.json" >>"$OUT/train.log" 2>&1
    stage recipe $?
else
    echo "recipe: skipped (no DeepSpeed; carry the wheels of bench/device_wheels.sh)"
fi
grep -E '^\{|best MFU|recipe MFU|Error|error' "$OUT/train.log" | cut -c1-600 | tail -n 12
echo "== GPU tests (last: the benchmarks come first)"
tests=(tests/test_model_gpu.py)
((HAVE_DS)) && tests+=("tests/test_training_recipe.py::test_bf16_zero2_on_cuda_trains_and_the_checkpoint_generates_in_fp16")
timeout "$(left "$TESTS_S")" "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -rs "${tests[@]}" \
    >"$OUT/gpu_tests.log" 2>&1
stage pytest $?
tail -n 15 "$OUT/gpu_tests.log"

echo "session: ${SECONDS}s"
if ((${#FAILED[@]})); then
    echo "FAILED stages: ${FAILED[*]}"
    exit 1
fi
echo "all stages exited 0"
