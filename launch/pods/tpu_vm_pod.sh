#!/bin/bash
# issf-train on a Cloud TPU VM pod slice (e.g. v4-32: 4 workers). Create the slice first
# (`gcloud compute tpus tpu-vm create ...`), then, from your own machine:
#
#   launch/pods/tpu_vm_pod.sh [--dry_run] setup                          every worker: clone, install
#   launch/pods/tpu_vm_pod.sh [--dry_run] train [--config.a.b=value ...]  every worker at once
#
# --dry_run prints the gcloud command instead of running it. `issf-train --distributed` calls
# jax.distributed.initialize(), which finds the slice's workers itself (TPU metadata): no
# coordinator flags. Every worker reads its own slice of each global batch and all of them write
# the checkpoints together, so --workdir and the shards must be where every worker sees them:
# gs:// paths. Only process 0 prints progress; gcloud shows every worker's output.
set -euo pipefail

TPU=${TPU:-issf-pod}                      # the slice's name
ZONE=${ZONE:-us-central2-b}
PROJECT=${PROJECT:-}                      # empty: gcloud's default project
REPO_URL=${REPO_URL:-https://github.com/YOUR_ORG/issf-jax.git}
BRANCH=${BRANCH:-main}
PYTHON=${PYTHON:-python3}                 # Python >= 3.11 on the workers' image
CONFIG=${CONFIG:-configs/thumos14.py}
WORKDIR=${WORKDIR:-gs://YOUR_BUCKET/runs/thumos14_pod}
SHARDS=${SHARDS:-gs://YOUR_BUCKET/data/thumos14_shards}

DRY_RUN=0
if [[ ${1:-} == --dry_run ]]; then DRY_RUN=1; shift; fi
ACTION=${1:?usage: $0 [--dry_run] setup|train [--config.a.b=value ...]}
shift

# q: arguments as shell words, one space apart (the remote command lines are built with it).
# show: the same for printing, readable: plain words bare, anything else in single quotes.
q() { local out; printf -v out '%q ' "$@"; printf '%s' "${out% }"; }
show() {
  local a out=() sq="'" esc="'\\''"
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+=("$a"); else out+=("'${a//$sq/$esc}'"); fi
  done
  echo "${out[*]}"
}

case $ACTION in
  setup)  # clone (or update) the repository and install the TPU build of jax
    remote="set -e; if [ -d issf-jax ]; then git -C issf-jax fetch -q origin $(q "$BRANCH");"
    remote+=" git -C issf-jax checkout -q FETCH_HEAD; else git clone -q -b $(q "$BRANCH")"
    remote+=" $(q "$REPO_URL") issf-jax; fi; cd issf-jax && $(q "$PYTHON") -m venv .venv"
    remote+=" && .venv/bin/pip install -q -e '.[tpu]'" ;;
  train)
    remote="cd issf-jax && $(q .venv/bin/issf-train --distributed --config "$CONFIG" \
      --workdir "$WORKDIR" "--config.data.shards_dir=$SHARDS" "$@")" ;;
  *) echo "$0: error: unknown action '$ACTION' (setup or train)" >&2; exit 2 ;;
esac

cmd=(gcloud compute tpus tpu-vm ssh "$TPU" "--zone=$ZONE" --worker=all "--command=$remote")
if [[ -n $PROJECT ]]; then cmd+=("--project=$PROJECT"); fi
if ((DRY_RUN)); then show "${cmd[@]}"; else exec "${cmd[@]}"; fi
