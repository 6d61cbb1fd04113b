#!/usr/bin/env bash
# Cloud TPU VM slice (single host or pod slice): create, install, train on all workers,
# resume after preemption, delete. Run from a machine with an authenticated gcloud.
# `launch/tpu_pod.sh --help` lists everything; `--dry-run` prints the commands instead.
set -euo pipefail

readonly COMMANDS="create setup train up status logs stop resume delete"

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh [options] COMMAND

Commands:
  create   create the TPU VM slice (an existing READY slice of that name is reused)
  setup    copy this checkout (git archive of HEAD) or clone GIT_URL on every worker and
           pip install '.[tpu]' into ~/venv (Python from uv)
  train    run `python -m cardioformer_jax.main` on all workers at once (one process per
           worker; jax.distributed is initialised from the TPU metadata). A previous run
           of this script on the slice is stopped first. Foreground unless --detach.
  up       create + setup + train
  status   describe the slice: state (READY, CREATING, PREEMPTED, ...), workers, ...
  logs     follow ~/train.log of worker 0 (runs started with --detach)
  stop     stop the training processes on all workers
  resume   after a preemption or failure: recreate the slice if it is gone, preempted
           or terminated (and set it up again), then rerun the same train command; the
           run continues from the latest Orbax checkpoint in the GCS workdir
  delete   delete the slice (teardown; the GCS workdir is kept)

Options (environment variable in brackets; flags win):
  --name NAME              [TPU_NAME]         slice name (default: cardioformer)
  --zone ZONE              [ZONE]             e.g. us-central2-b (required)
  --project PROJECT        [PROJECT]          default: gcloud's configured project
  --accelerator-type TYPE  [ACCELERATOR_TYPE] e.g. v4-32, v5litepod-16, v5p-64, v6e-16
                                              (default: v4-32)
  --version VERSION        [RUNTIME_VERSION]  TPU software version (default by type:
                                              v2-v4 tpu-ubuntu2204-base, v5e
                                              v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5,
                                              v6e v2-alpha-tpuv6e)
  --spot | --preemptible   [PROVISIONING=spot|preemptible|standard] (default: standard)
  --service-account EMAIL  [SERVICE_ACCOUNT]  default: the Compute Engine default account;
                                              it needs read/write access to the bucket
  --config FILE            [CONFIG]           default: configs/ptbxl.py
  --workdir gs://...       [WORKDIR]          checkpoints, logs, results (required for
                                              train/up/resume; must be on GCS)
  --data-dir gs://...      [DATA_DIR]         the TFDS data_dir (--config.dataset.data_dir);
                                              must be on GCS; default: the config's
  --arg FLAG               [EXTRA_ARGS]       one more flag for main.py, repeatable, e.g.
                                              --arg=--config.train.batch_size=1024
                                              (EXTRA_ARGS: space-separated)
  --git-url URL            [GIT_URL]          install by cloning this URL on the workers
                                              instead of copying HEAD of this checkout
  --git-ref REF            [GIT_REF]          branch/tag/commit of --git-url (default: main)
  --python VERSION         [PYTHON_VERSION]   Python of the workers' venv (default: 3.12)
  --detach                 [DETACH=1]         train in the background (nohup, ~/train.log)
  --skip-setup             [SKIP_SETUP=1]     resume: do not reinstall on a live slice
  --skip-preflight         [PREFLIGHT=0]      create/train/up/resume: skip the local
                                              compile check (below)
  --local-python PATH      [LOCAL_PYTHON]     this machine's interpreter with the project
                                              and its [aot] extra (default: python3)
  --dry-run                [DRY_RUN=1]        print the commands (one per line, shell-quoted)
                                              instead of running them; the slice is then
                                              assumed in state DRY_RUN_STATE (default:
                                              PREEMPTED for resume, else NOT_FOUND)
  -h, --help

Preflight: before create, train, up and resume (so before any TPU is paid for), the
config's training programs are compiled here for the slice's topology by the TPU compiler
(`python -m cardioformer_jax.aot --target=tpu:ACCELERATOR_TYPE`, with the --arg
--config.* overrides); a config that does not fit the chips' memory stops the script
with the compiler's numbers. It needs `pip install -e ".[aot]"` locally (Python 3.12+).

Example:
  launch/tpu_pod.sh --zone=us-central2-b --accelerator-type=v4-32 --spot \
    --workdir=gs://my-bucket/runs/ptbxl --data-dir=gs://my-bucket/tfds up
  launch/tpu_pod.sh --zone=us-central2-b --accelerator-type=v4-32 --spot \
    --workdir=gs://my-bucket/runs/ptbxl --data-dir=gs://my-bucket/tfds resume
EOF
}

die() {
  echo "tpu_pod.sh: error: $*" >&2
  echo "Run 'launch/tpu_pod.sh --help' for the options." >&2
  exit 2
}

note() { echo "tpu_pod.sh: $*" >&2; }

# One argument, quoted for a POSIX shell only where needed (single quotes); in
# `--option=value` only the value is quoted, which reads better and parses the same.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  elif [[ "$1" =~ ^(--?[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf "%s'%s'" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]//\'/\'\\\'\'}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_all() {
  local out="" arg
  for arg in "$@"; do
    out+="${out:+ }$(quote "$arg")"
  done
  printf '%s' "$out"
}

# Runs a command, or prints it in a dry run.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    quote_all "$@"
    echo
  else
    "$@"
  fi
}

# --- parameters ---------------------------------------------------------------------

TPU_NAME="${TPU_NAME:-cardioformer}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
PROVISIONING="${PROVISIONING:-standard}"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-}"
CONFIG="${CONFIG:-configs/ptbxl.py}"
WORKDIR="${WORKDIR:-}"
DATA_DIR="${DATA_DIR:-}"
GIT_URL="${GIT_URL:-}"
GIT_REF="${GIT_REF:-main}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
DETACH="${DETACH:-0}"
SKIP_SETUP="${SKIP_SETUP:-0}"
PREFLIGHT="${PREFLIGHT:-1}"
LOCAL_PYTHON="${LOCAL_PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"
DRY_RUN_STATE="${DRY_RUN_STATE:-}"
read -r -a EXTRA <<<"${EXTRA_ARGS:-}"
COMMAND=""

while (($#)); do
  arg="$1"
  shift_by=1
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --spot) PROVISIONING=spot ;;
    --preemptible) PROVISIONING=preemptible ;;
    --detach) DETACH=1 ;;
    --skip-setup) SKIP_SETUP=1 ;;
    --skip-preflight) PREFLIGHT=0 ;;
    --name | --name=* | --zone | --zone=* | --project | --project=* \
      | --accelerator-type | --accelerator-type=* | --version | --version=* \
      | --service-account | --service-account=* | --config | --config=* \
      | --workdir | --workdir=* | --data-dir | --data-dir=* | --arg | --arg=* \
      | --git-url | --git-url=* | --git-ref | --git-ref=* | --python | --python=* \
      | --local-python | --local-python=*)
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
        --name) TPU_NAME="$value" ;;
        --zone) ZONE="$value" ;;
        --project) PROJECT="$value" ;;
        --accelerator-type) ACCELERATOR_TYPE="$value" ;;
        --version) RUNTIME_VERSION="$value" ;;
        --service-account) SERVICE_ACCOUNT="$value" ;;
        --config) CONFIG="$value" ;;
        --workdir) WORKDIR="$value" ;;
        --data-dir) DATA_DIR="$value" ;;
        --arg) EXTRA+=("$value") ;;
        --git-url) GIT_URL="$value" ;;
        --git-ref) GIT_REF="$value" ;;
        --python) PYTHON_VERSION="$value" ;;
        --local-python) LOCAL_PYTHON="$value" ;;
      esac
      ;;
    -*) die "unknown option: $arg" ;;
    *)
      [[ -z "$COMMAND" ]] || die "one command only (got '$COMMAND' and '$arg')"
      COMMAND="$arg"
      ;;
  esac
  shift "$shift_by"
done

# --- validation ---------------------------------------------------------------------

[[ -n "$COMMAND" ]] || die "no command given; one of: $COMMANDS"
[[ " $COMMANDS " == *" $COMMAND "* ]] || die "unknown command '$COMMAND'; one of: $COMMANDS"
[[ "$DRY_RUN" == 0 || "$DRY_RUN" == 1 ]] || die "DRY_RUN must be 0 or 1, got '$DRY_RUN'"
[[ "$DETACH" == 0 || "$DETACH" == 1 ]] || die "DETACH must be 0 or 1, got '$DETACH'"
[[ "$SKIP_SETUP" == 0 || "$SKIP_SETUP" == 1 ]] \
  || die "SKIP_SETUP must be 0 or 1, got '$SKIP_SETUP'"
[[ "$PREFLIGHT" == 0 || "$PREFLIGHT" == 1 ]] || die "PREFLIGHT must be 0 or 1, got '$PREFLIGHT'"
# GCE resource names: lowercase letter first, then lowercase letters, digits, hyphens.
[[ "$TPU_NAME" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] \
  || die "invalid --name '$TPU_NAME': lowercase letters, digits and '-', starting with a letter"
[[ -n "$ZONE" ]] || die "--zone (or ZONE) is required, e.g. --zone=us-central2-b"
[[ "$ZONE" =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] \
  || die "invalid --zone '$ZONE': expected REGION-ZONE like us-central2-b"
if [[ -n "$PROJECT" ]]; then
  [[ "$PROJECT" =~ ^[a-z][-a-z0-9]{4,28}[a-z0-9]$ ]] || die "invalid --project '$PROJECT'"
fi
# TPU generation and chip/core count: v2-8, v3-32, v4-64, v5litepod-16, v5p-128, v6e-8.
[[ "$ACCELERATOR_TYPE" =~ ^(v2|v3|v4|v5p|v5litepod|v6e)-([0-9]+)$ ]] \
  || die "unknown accelerator type format '$ACCELERATOR_TYPE': expected GENERATION-SIZE with GENERATION one of v2, v3, v4, v5p, v5litepod, v6e (e.g. v4-32, v5litepod-16)"
tpu_generation="${BASH_REMATCH[1]}"
tpu_size="${BASH_REMATCH[2]}"
((10#$tpu_size >= 1 && (10#$tpu_size & (10#$tpu_size - 1)) == 0)) \
  || die "accelerator type '$ACCELERATOR_TYPE': the size must be a power of two"
if [[ -z "$RUNTIME_VERSION" ]]; then
  case "$tpu_generation" in
    v5litepod) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
  esac
fi
case "$PROVISIONING" in
  spot | preemptible | standard) ;;
  *) die "PROVISIONING must be spot, preemptible or standard, got '$PROVISIONING'" ;;
esac
[[ "$PYTHON_VERSION" =~ ^3\.[0-9]+$ ]] || die "invalid --python '$PYTHON_VERSION' (e.g. 3.12)"
((10#${PYTHON_VERSION#3.} >= 12)) || die "--python $PYTHON_VERSION: the project needs >= 3.12"
# What a dry run assumes the slice's state is: the path that shows the most commands.
if [[ -z "$DRY_RUN_STATE" ]]; then
  DRY_RUN_STATE=NOT_FOUND
  [[ "$COMMAND" != resume ]] || DRY_RUN_STATE=PREEMPTED
fi
[[ "$DRY_RUN_STATE" =~ ^[A-Z_]+$ ]] || die "invalid DRY_RUN_STATE '$DRY_RUN_STATE'"

case "$COMMAND" in
  train | up | resume)
    [[ -n "$WORKDIR" ]] \
      || die "--workdir (or WORKDIR) is required for '$COMMAND', e.g. --workdir=gs://BUCKET/runs/ptbxl"
    [[ "$WORKDIR" =~ ^gs://[a-z0-9][-a-z0-9_.]{1,221}[a-z0-9](/.*)?$ ]] \
      || die "--workdir '$WORKDIR' must be a gs://BUCKET/PATH URL: every worker of a pod writes checkpoints there, and a resumed slice (new VMs) must find them"
    if [[ -n "$DATA_DIR" ]]; then
      [[ "$DATA_DIR" =~ ^gs://[a-z0-9][-a-z0-9_.]{1,221}[a-z0-9](/.*)?$ ]] \
        || die "--data-dir '$DATA_DIR' must be a gs://BUCKET/PATH URL readable by every worker (build locally, then copy it: see launch/README.md)"
    fi
    [[ "$CONFIG" =~ ^[A-Za-z0-9_./-]+\.py$ ]] \
      || die "--config '$CONFIG' must be a .py path relative to the repository (e.g. configs/ptbxl.py)"
    ;;
esac

# --- commands -----------------------------------------------------------------------

GCLOUD_TPU=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[[ -z "$PROJECT" ]] || WHERE+=(--project="$PROJECT")
# Paths on the workers: $HOME is expanded there, not here.
# shellcheck disable=SC2016
readonly REMOTE_DIR='$HOME/cardioformer_jax' PID_FILE='$HOME/cardioformer_train.pid' \
  UV='$HOME/.local/bin/uv' LOG_FILE='$HOME/train.log'

on_all_workers() {
  run "${GCLOUD_TPU[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all --command="$1"
}

# Sets STATE to the slice's state (READY, CREATING, PREEMPTED, ...) or NOT_FOUND. A dry
# run prints the query and assumes DRY_RUN_STATE.
STATE=""
query_state() {
  local query=("${GCLOUD_TPU[@]}" describe "$TPU_NAME" "${WHERE[@]}" --format=value\(state\))
  if [[ "$DRY_RUN" == 1 ]]; then
    run "${query[@]}"
    STATE="$DRY_RUN_STATE"
    return
  fi
  local out
  if out="$("${query[@]}" 2>&1)"; then
    STATE="${out:-UNKNOWN}"
  elif [[ "$out" == *NOT_FOUND* || "$out" == *"not found"* ]]; then
    STATE=NOT_FOUND
  else
    echo "$out" >&2
    die "could not query TPU '$TPU_NAME' in $ZONE (see the gcloud message above)"
  fi
}

# The config's programs compiled here for the slice (cardioformer_jax.aot): exits with
# the compiler's numbers when they do not fit, before anything is created or started.
preflight() {
  [[ "$PREFLIGHT" == 1 ]] || return 0
  if [[ "$tpu_generation" == v2 || "$tpu_generation" == v3 ]]; then
    note "preflight: no compile check for $tpu_generation (the TPU compiler here targets v4 and later)"
    return 0
  fi
  local args=(-m cardioformer_jax.aot --config="$CONFIG" --target="tpu:$ACCELERATOR_TYPE"
    --batch_size=config --noestimate) extra
  for extra in "${EXTRA[@]}"; do
    [[ "$extra" != --config.* ]] || args+=("$extra")
  done
  note "preflight: compiling the config for $ACCELERATOR_TYPE here (--skip-preflight skips)"
  if [[ "$DRY_RUN" == 1 ]]; then
    run "$LOCAL_PYTHON" "${args[@]}"
  elif ! "$LOCAL_PYTHON" "${args[@]}" >/dev/null; then
    die "preflight failed: the config does not fit $ACCELERATOR_TYPE or could not be compiled here (see above; needs pip install -e '.[aot]'); nothing was created or started"
  fi
}

create_slice() {
  local cmd=("${GCLOUD_TPU[@]}" create "$TPU_NAME" "${WHERE[@]}"
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
    --scopes=https://www.googleapis.com/auth/cloud-platform)
  [[ "$PROVISIONING" == standard ]] || cmd+=(--"$PROVISIONING")
  [[ -z "$SERVICE_ACCOUNT" ]] || cmd+=(--service-account="$SERVICE_ACCOUNT")
  run "${cmd[@]}"
}

cmd_create() {
  query_state
  case "$STATE" in
    NOT_FOUND) create_slice ;;
    READY) note "TPU '$TPU_NAME' exists and is READY: reusing it" ;;
    *) die "TPU '$TPU_NAME' exists in state $STATE; use 'resume' (recreates a preempted slice) or 'delete'" ;;
  esac
}

cmd_setup() {
  local fetch
  if [[ -n "$GIT_URL" ]]; then
    # "--": a URL starting with "-" is never read as an option.
    fetch="rm -rf $REMOTE_DIR && git clone --quiet -- $(quote "$GIT_URL") $REMOTE_DIR && git -C $REMOTE_DIR checkout --quiet $(quote "$GIT_REF")"
  else
    # HEAD of this checkout, as a tarball copied to every worker.
    local repo archive
    repo="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel 2>/dev/null)" \
      || die "setup copies this git checkout (git archive of HEAD); run the script from one, or pass --git-url"
    if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]]; then
      note "warning: uncommitted changes are not installed (git archive of HEAD)"
    fi
    archive="${TMPDIR:-/tmp}/cardioformer_jax-$(git -C "$repo" rev-parse --short HEAD).tar.gz"
    run git -C "$repo" archive --format=tar.gz --output="$archive" HEAD
    run "${GCLOUD_TPU[@]}" scp "$archive" "$TPU_NAME:cardioformer_jax.tar.gz" "${WHERE[@]}" \
      --worker=all
    fetch="rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf \$HOME/cardioformer_jax.tar.gz -C $REMOTE_DIR"
  fi
  # The TPU images ship an older Python (3.10 on Ubuntu 22.04): uv (from PyPI, not a
  # piped install script) installs the project's Python into a fresh venv, then the
  # project at the lock's versions with jax[tpu] (libtpu comes from PyPI) and the gs://
  # clients: gcsfs (etils.epath, TFDS metadata, Orbax directories) and google-cloud-storage
  # (tensorboardX event files).
  on_all_workers "set -e; $fetch; { [ -x $UV ] || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet --user --break-system-packages uv; }; rm -rf \$HOME/venv; $UV venv --quiet --python $PYTHON_VERSION \$HOME/venv; cd $REMOTE_DIR; $UV pip install --quiet --python \$HOME/venv/bin/python -c requirements/lock.txt '.[tpu]' gcsfs google-cloud-storage; \$HOME/venv/bin/python -c 'import cardioformer_jax, jax; print(\"installed, jax\", jax.__version__)'"
}

train_args() {
  local args=(-m cardioformer_jax.main --config="$CONFIG" --workdir="$WORKDIR")
  [[ -z "$DATA_DIR" ]] || args+=(--config.dataset.data_dir="$DATA_DIR")
  args+=("${EXTRA[@]}")
  quote_all "${args[@]}"
}

# Stops the process a previous `train` started (its pid file), never others: SIGTERM,
# up to 60 s to exit, then SIGKILL (Orbax checkpoints are atomic either way).
stop_remote() {
  local pid="\$(cat $PID_FILE)"
  printf '%s' "if [ -f $PID_FILE ] && kill -0 $pid 2>/dev/null; then echo stopping the previous run; kill $pid; for _ in \$(seq 60); do kill -0 $pid 2>/dev/null || break; sleep 1; done; kill -9 $pid 2>/dev/null || true; fi; rm -f $PID_FILE"
}

cmd_train() {
  local python="\$HOME/venv/bin/python" args start
  args="$(train_args)"
  # exec: the shell's pid (in the pid file) becomes the trainer's.
  start="cd $REMOTE_DIR && echo \$\$ >$PID_FILE && exec $python $args"
  if [[ "$DETACH" == 1 ]]; then
    start="cd $REMOTE_DIR && { nohup $python $args >>$LOG_FILE 2>&1 </dev/null & echo \$! >$PID_FILE; }"
  fi
  on_all_workers "$(stop_remote); $start"
}

cmd_resume() {
  query_state
  note "TPU '$TPU_NAME' state: $STATE"
  case "$STATE" in
    READY)
      [[ "$SKIP_SETUP" == 1 ]] || cmd_setup
      ;;
    NOT_FOUND)
      create_slice
      cmd_setup
      ;;
    PREEMPTED | TERMINATED | STOPPED | SUSPENDED)
      # Spot and preemptible slices cannot be restarted: delete, then create again.
      run "${GCLOUD_TPU[@]}" delete "$TPU_NAME" "${WHERE[@]}" --quiet
      create_slice
      cmd_setup
      ;;
    *) die "TPU '$TPU_NAME' is $STATE; wait until it is READY (or gone), then run resume again" ;;
  esac
  cmd_train
}

case "$COMMAND" in
  create | train | up | resume) preflight ;;
esac

case "$COMMAND" in
  create) cmd_create ;;
  setup) cmd_setup ;;
  train) cmd_train ;;
  up)
    cmd_create
    cmd_setup
    cmd_train
    ;;
  status)
    run "${GCLOUD_TPU[@]}" describe "$TPU_NAME" "${WHERE[@]}"
    ;;
  logs) run "${GCLOUD_TPU[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=0 \
    --command="tail -n 100 -F $LOG_FILE" ;;
  stop) on_all_workers "$(stop_remote)" ;;
  resume) cmd_resume ;;
  delete) run "${GCLOUD_TPU[@]}" delete "$TPU_NAME" "${WHERE[@]}" --quiet ;;
esac
