#!/usr/bin/env bash
# One process driving all GPUs of this machine (or those of --gpus): the mesh covers
# jax.device_count() devices (config mesh.shape (-1, 1): data parallel over all of them).
# `launch/single_host_gpu.sh --help` lists the options; `--dry-run` prints the command.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/single_host_gpu.sh [options]

Runs `python -m cardioformer_jax.main` as ONE process over all local GPUs (JAX_NUM_PROCESSES=1:
never joins a cluster, even inside a SLURM step). Rerunning the same command resumes from
the latest checkpoint in the workdir.

Options (environment variable in brackets; flags win):
  --config FILE      [CONFIG]      default: configs/ptbxl.py
  --workdir DIR      [WORKDIR]     required: local directory or gs://BUCKET/PATH
  --data-dir DIR     [DATA_DIR]    --config.dataset.data_dir (default: the config's)
  --gpus LIST        [GPUS]        GPU ids to use, e.g. 0,1 (CUDA_VISIBLE_DEVICES; default: all)
  --mem-fraction F   [MEM_FRACTION] XLA_PYTHON_CLIENT_MEM_FRACTION, e.g. 0.9 (default: JAX's)
  --arg FLAG         [EXTRA_ARGS]  one more flag for main.py, repeatable
                                   (EXTRA_ARGS: space-separated)
  --python PATH      [PYTHON]      interpreter with the project installed (default: python)
  --gpu-model MODEL  [GPU_MODEL]   h100, h200 or b200: the preflight's target (default: h100)
  --skip-preflight   [PREFLIGHT=0] skip the compile check below
  --dry-run          [DRY_RUN=1]   print the command instead of running it
  -h, --help

Preflight: first, the config's training programs are compiled for gpu:MODEL:COUNT
(`python -m cardioformer_jax.aot`, COUNT from --gpus or nvidia-smi, with the --arg
--config.* overrides); a config that does not fit the GPUs' memory stops here with the
compiler's numbers instead of failing after the data is loaded.

Example:
  launch/single_host_gpu.sh --workdir=runs/ptbxl --data-dir=~/tensorflow_datasets \
    --arg=--config.train.batch_size=512
EOF
}

die() {
  echo "single_host_gpu.sh: error: $*" >&2
  echo "Run 'launch/single_host_gpu.sh --help' for the options." >&2
  exit 2
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

# A dry run's output: one command per line, each argument shell-quoted.
print_command() {
  local line="" arg
  for arg in "$@"; do
    line+="${line:+ }$(quote "$arg")"
  done
  printf '%s\n' "$line"
}

CONFIG="${CONFIG:-configs/ptbxl.py}"
WORKDIR="${WORKDIR:-}"
DATA_DIR="${DATA_DIR:-}"
GPUS="${GPUS:-}"
MEM_FRACTION="${MEM_FRACTION:-}"
PYTHON="${PYTHON:-python}"
GPU_MODEL="${GPU_MODEL:-h100}"
PREFLIGHT="${PREFLIGHT:-1}"
DRY_RUN="${DRY_RUN:-0}"
read -r -a EXTRA <<<"${EXTRA_ARGS:-}"

while (($#)); do
  arg="$1"
  shift_by=1
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --skip-preflight) PREFLIGHT=0 ;;
    --config | --config=* | --workdir | --workdir=* | --data-dir | --data-dir=* \
      | --gpus | --gpus=* | --mem-fraction | --mem-fraction=* | --arg | --arg=* \
      | --python | --python=* | --gpu-model | --gpu-model=*)
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
        --config) CONFIG="$value" ;;
        --workdir) WORKDIR="$value" ;;
        --data-dir) DATA_DIR="$value" ;;
        --gpus) GPUS="$value" ;;
        --mem-fraction) MEM_FRACTION="$value" ;;
        --arg) EXTRA+=("$value") ;;
        --python) PYTHON="$value" ;;
        --gpu-model) GPU_MODEL="$value" ;;
      esac
      ;;
    *) die "unknown argument: $arg" ;;
  esac
  shift "$shift_by"
done

[[ "$DRY_RUN" == 0 || "$DRY_RUN" == 1 ]] || die "DRY_RUN must be 0 or 1, got '$DRY_RUN'"
[[ -n "$WORKDIR" ]] || die "--workdir (or WORKDIR) is required (a local directory or gs://BUCKET/PATH)"
[[ "$WORKDIR" != gs:/ && "$WORKDIR" != gs:// ]] || die "--workdir '$WORKDIR' names no bucket"
[[ "$CONFIG" == *.py ]] || die "--config '$CONFIG' must be a configs/*.py file"
if [[ -n "$GPUS" ]]; then
  [[ "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus '$GPUS' must be a comma-separated list of GPU ids, e.g. 0,1"
fi
if [[ -n "$MEM_FRACTION" ]]; then
  [[ "$MEM_FRACTION" =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] \
    || die "--mem-fraction '$MEM_FRACTION' must be a number in (0, 1], e.g. 0.9"
fi
[[ "$GPU_MODEL" =~ ^(h100|h200|b200)$ ]] || die "--gpu-model '$GPU_MODEL' must be h100, h200 or b200"
[[ "$PREFLIGHT" == 0 || "$PREFLIGHT" == 1 ]] || die "PREFLIGHT must be 0 or 1, got '$PREFLIGHT'"
if [[ "$DRY_RUN" == 0 ]]; then
  command -v "$PYTHON" >/dev/null || die "Python interpreter '$PYTHON' not found (--python)"
fi

# Preflight (cardioformer_jax.aot): the config compiled for these GPUs by the GPU compiler.
if [[ "$PREFLIGHT" == 1 ]]; then
  if [[ -n "$GPUS" ]]; then
    IFS=, read -r -a gpu_ids <<<"$GPUS"
    gpu_count="${#gpu_ids[@]}"
  else
    gpu_count="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
  fi
  if [[ "${gpu_count:-0}" -ge 1 ]]; then
    preflight=("$PYTHON" -m cardioformer_jax.aot --config="$CONFIG"
      --target="gpu:$GPU_MODEL:$gpu_count" --batch_size=config)
    for extra in "${EXTRA[@]}"; do
      [[ "$extra" != --config.* ]] || preflight+=("$extra")
    done
    if [[ "$DRY_RUN" == 1 ]]; then
      print_command "${preflight[@]}"
    elif ! "${preflight[@]}" >/dev/null; then
      die "preflight failed: the config does not fit $gpu_count $GPU_MODEL GPU(s) or could not be compiled (see above; --skip-preflight skips the check)"
    fi
  else
    echo "single_host_gpu.sh: preflight skipped: no GPU count (give --gpus)" >&2
  fi
fi

# JAX_NUM_PROCESSES=1: cardioformer_jax.training.distributed then never initialises a cluster.
environment=(JAX_NUM_PROCESSES=1)
[[ -z "$GPUS" ]] || environment+=(CUDA_VISIBLE_DEVICES="$GPUS")
[[ -z "$MEM_FRACTION" ]] || environment+=(XLA_PYTHON_CLIENT_MEM_FRACTION="$MEM_FRACTION")
command=(env "${environment[@]}" "$PYTHON" -m cardioformer_jax.main --config="$CONFIG"
  --workdir="$WORKDIR")
[[ -z "$DATA_DIR" ]] || command+=(--config.dataset.data_dir="$DATA_DIR")
command+=("${EXTRA[@]}")

if [[ "$DRY_RUN" == 1 ]]; then
  print_command "${command[@]}"
else
  exec "${command[@]}"
fi
