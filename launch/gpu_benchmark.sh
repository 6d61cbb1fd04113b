#!/usr/bin/env bash
# Benchmark of one GPU: the PTB-XL model in float32 and bfloat16 at several batch sizes
# (training, evaluation, MFU, compile time, peak device memory, latency) and the Grain
# input pipeline alone, as JSON; the last line is the best bfloat16 training figure.
# `launch/gpu_benchmark.sh --help` lists the options; `--dry-run` prints the commands.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/gpu_benchmark.sh [options]

Runs from the repository root, on a machine with one GPU:
  1. a venv that sees the machine's own packages (--system-site-packages): a GPU image's
     JAX (with its CUDA plugin) is used as it is when it is new enough for the project
     (jax >= 0.10.2); only what is missing gets installed, from the package index or
     from a folder of wheels (--wheels, for a machine without network);
  2. `python -m cardioformer_jax.benchmark` on configs/ptbxl.py for every dtype and batch
     size (model.json);
  3. K seeds of configs/ptbxl.py (batch 256) trained together in one vmapped step against
     one after another (seeds.json, `benchmark --seeds=K`);
  4. a synthetic PTB-XL twin built with the project's builder, and the training input
     pipeline alone at several Grain worker counts (input_pipeline.json);
  5. one line: the best bfloat16 training samples/s, its MFU and batch size.
About 4-6 minutes on an H100/H200 with the defaults.

Options (environment variable in brackets; flags win):
  --out DIR          [OUT_DIR]      results and scratch (default: /tmp/cardioformer_gpu_benchmark)
  --batch-sizes L    [BATCH_SIZES]  default: 256,1024,4096
  --dtypes L         [DTYPES]       default: float32,bfloat16
  --steps N          [STEPS]        timed training steps per run (default: 20)
  --seeds K          [SEEDS]        seeds for step 3 (default: 5; 0 skips it)
  --patients N       [PATIENTS]     synthetic patients for the pipeline (default: 1000)
  --workers L        [WORKERS]      Grain worker counts (default: 0,4,8)
  --pipeline-batch N [PIPELINE_BATCH] default: 1024
  --wheels DIR       [WHEELS]       install missing packages from these wheels only
  --python PATH      [PYTHON]       interpreter whose packages the venv sees (default: python3)
  --no-venv          [NO_VENV=1]    run PYTHON itself (the project installed there or not)
  --arg FLAG         [EXTRA_ARGS]   one more flag for the model benchmark, repeatable
  --allow-cpu        [ALLOW_CPU=1]  run without a GPU (to try the script on a laptop)
  --dry-run          [DRY_RUN=1]    print the commands instead of running them
  -h, --help
EOF
}

# One argument, quoted for a POSIX shell only where needed (single quotes); in
# `--option=value` only the value is quoted.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  elif [[ "$1" =~ ^(--?[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf "%s'%s'" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]//\'/\'\\\'\'}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

die() {
  echo "gpu_benchmark.sh: error: $*" >&2
  echo "Run 'launch/gpu_benchmark.sh --help' for the options." >&2
  exit 2
}

OUT_DIR="${OUT_DIR:-/tmp/cardioformer_gpu_benchmark}"
BATCH_SIZES="${BATCH_SIZES:-256,1024,4096}"
DTYPES="${DTYPES:-float32,bfloat16}"
STEPS="${STEPS:-20}"
SEEDS="${SEEDS:-5}"
PATIENTS="${PATIENTS:-1000}"
WORKERS="${WORKERS:-0,4,8}"
PIPELINE_BATCH="${PIPELINE_BATCH:-1024}"
WHEELS="${WHEELS:-}"
PYTHON="${PYTHON:-python3}"
ALLOW_CPU="${ALLOW_CPU:-0}"
NO_VENV="${NO_VENV:-0}"
DRY_RUN="${DRY_RUN:-0}"
read -r -a EXTRA <<<"${EXTRA_ARGS:-}"

while (($#)); do
  arg="$1"
  shift_by=1
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --allow-cpu) ALLOW_CPU=1 ;;
    --no-venv) NO_VENV=1 ;;
    --out | --out=* | --batch-sizes | --batch-sizes=* | --dtypes | --dtypes=* | --steps \
      | --steps=* | --seeds | --seeds=* | --patients | --patients=* | --workers \
      | --workers=* | --pipeline-batch | --pipeline-batch=* | --wheels | --wheels=* | --python | --python=* | --arg | --arg=*)
      option="${arg%%=*}"
      if [[ "$arg" == *=* ]]; then
        value="${arg#*=}"
      elif (($# >= 2)) && [[ "$option" == --arg || "$2" != --* ]]; then
        value="$2"
        shift_by=2
      else
        die "option $option needs a value"
      fi
      case "$option" in
        --out) OUT_DIR="$value" ;;
        --batch-sizes) BATCH_SIZES="$value" ;;
        --dtypes) DTYPES="$value" ;;
        --steps) STEPS="$value" ;;
        --seeds) SEEDS="$value" ;;
        --patients) PATIENTS="$value" ;;
        --workers) WORKERS="$value" ;;
        --pipeline-batch) PIPELINE_BATCH="$value" ;;
        --wheels) WHEELS="$value" ;;
        --python) PYTHON="$value" ;;
        --arg) EXTRA+=("$value") ;;
      esac
      ;;
    *) die "unknown argument: $arg" ;;
  esac
  shift "$shift_by"
done

[[ "$BATCH_SIZES" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--batch-sizes must be numbers like 256,1024"
[[ "$DTYPES" =~ ^(float32|bfloat16)(,(float32|bfloat16))*$ ]] \
  || die "--dtypes must be float32 and/or bfloat16, got '$DTYPES'"
[[ "$WORKERS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--workers must be numbers like 0,4,8"
for name in STEPS PATIENTS PIPELINE_BATCH; do
  [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || die "$name must be a positive integer, got '${!name}'"
done
[[ "$SEEDS" =~ ^[0-9]+$ && "$SEEDS" != 1 ]] || die "--seeds must be 0 or at least 2, got '$SEEDS'"
[[ -z "$WHEELS" || -d "$WHEELS" ]] || die "--wheels: no such folder: $WHEELS"
[[ -f configs/ptbxl.py && -f pyproject.toml ]] || die "run it from the repository root"

VENV="$OUT_DIR/venv"
VPY="$VENV/bin/python"
[[ "$NO_VENV" == 1 ]] && VPY="$PYTHON"
PIP_SOURCE=()
[[ -n "$WHEELS" ]] && PIP_SOURCE=(--no-index --find-links "$WHEELS")
# The newest-JAX question is answered by pip: `jax>=0.10.2` is satisfied by an installed
# JAX that is new enough, which pip then leaves alone (and its CUDA plugin with it).
SETUP=("$PYTHON" -m venv --system-site-packages "$VENV")
INSTALL=("$VPY" -m pip install --quiet "${PIP_SOURCE[@]}" -e .)
CHECK=("$VPY" -c "import jax, sys; b = jax.default_backend(); print(f'jax {jax.__version__}, \
{jax.device_count()} x {jax.devices()[0].device_kind} ({b})'); sys.exit(b != 'gpu' and $ALLOW_CPU != 1)")
MODEL=("$VPY" -m cardioformer_jax.benchmark --config=configs/ptbxl.py
  "--sweep_batch_sizes=$BATCH_SIZES" "--sweep_dtypes=$DTYPES" "--steps=$STEPS" "${EXTRA[@]}")
SEED_RUN=("$VPY" -m cardioformer_jax.benchmark --config=configs/ptbxl.py --batch_size=256
  "--seeds=$SEEDS" "--steps=$STEPS" "${EXTRA[@]}")
TWIN=("$VPY" -m cardioformer_jax.synthetic "--out=$OUT_DIR/synthetic/raw"
  "--patients=$PATIENTS")
BUILD=("$VPY" -m cardioformer_jax.build_dataset ptbxl "--manual_dir=$OUT_DIR/synthetic/raw"
  "--data_dir=$OUT_DIR/synthetic/tfds" --no_progress)
PIPELINE=("$VPY" -m cardioformer_jax.benchmark --config=configs/ptbxl.py --input_pipeline
  "--config.dataset.data_dir=$OUT_DIR/synthetic/tfds" "--batch_size=$PIPELINE_BATCH"
  "--pipeline_workers=$WORKERS")

if [[ "$DRY_RUN" == 1 ]]; then
  for command in SETUP INSTALL CHECK MODEL SEED_RUN TWIN BUILD PIPELINE; do
    [[ "$NO_VENV" == 1 && "$command" == SETUP ]] && continue
    [[ "$SEEDS" == 0 && "$command" == SEED_RUN ]] && continue
    declare -n words="$command"
    line=""
    for word in "${words[@]}"; do line+="$(quote "$word") "; done
    echo "${line% }"
  done
  exit 0
fi

mkdir -p "$OUT_DIR"
[[ "$NO_VENV" == 1 || -x "$VPY" ]] || "${SETUP[@]}"
# Installed already (an editable install of this clone): nothing to fetch.
"$VPY" -c "import cardioformer_jax" 2>/dev/null || "${INSTALL[@]}"
"${CHECK[@]}" || die "JAX sees no GPU here (--allow-cpu runs on the CPU anyway)"
echo "=== model: $BATCH_SIZES x $DTYPES"
"${MODEL[@]}" >"$OUT_DIR/model.json"
cat "$OUT_DIR/model.json"
if [[ "$SEEDS" != 0 ]]; then
  echo "=== $SEEDS seeds together against one after another"
  "${SEED_RUN[@]}" >"$OUT_DIR/seeds.json"
  cat "$OUT_DIR/seeds.json"
fi
echo "=== input pipeline: Grain workers $WORKERS, batch $PIPELINE_BATCH"
[[ -f "$OUT_DIR/synthetic/raw/.done" ]] || { "${TWIN[@]}" && touch "$OUT_DIR/synthetic/raw/.done"; }
"${BUILD[@]}" >"$OUT_DIR/build.log" 2>&1 || { cat "$OUT_DIR/build.log"; die "building the twin failed"; }
"${PIPELINE[@]}" >"$OUT_DIR/input_pipeline.json"
cat "$OUT_DIR/input_pipeline.json"
"$VPY" - "$OUT_DIR/model.json" <<'PY'
import json, sys
best = json.load(open(sys.argv[1]))["best_by_dtype"]
if "bfloat16" in best:
    b = best["bfloat16"]
    mfu = "unknown (pass --arg=--peak_tflops=...)" if b["mfu"] is None else f"{b['mfu']:.1%}"
    print(f"best bfloat16 training: {b['train_samples_per_second']:.0f} samples/s, "
          f"MFU {mfu}, batch {b['batch_size']}")
else:
    print("best bfloat16 training: not run (--dtypes has no bfloat16)")
PY
