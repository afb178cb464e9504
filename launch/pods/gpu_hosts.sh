#!/bin/bash
# issf-train on a list of GPU hosts reached over ssh (no scheduler). HOSTFILE holds one
# [user@]host per line; the first one is process 0 and the coordinator.
#
#   launch/pods/gpu_hosts.sh [--dry_run] HOSTFILE setup                          clone, install
#   launch/pods/gpu_hosts.sh [--dry_run] HOSTFILE train [--config.a.b=value ...]  all hosts at once
#
# --dry_run prints the ssh commands instead of running them. Each host runs one process over all
# its GPUs, with the coordinator, the process count and its own index given as flags; every host
# must reach the first one on $PORT and see --workdir and the shards at the same path (a shared
# file system, or gs:// paths). ssh must log in without a password (keys, BatchMode). Each host's
# output goes to $LOGDIR/<i>-<host>.log here; only process 0 prints progress. Ctrl-C stops the
# ssh sessions; a trainer whose ssh is gone stops at its next collective.
set -euo pipefail

REPO_URL=${REPO_URL:-https://github.com/YOUR_ORG/issf-jax.git}
BRANCH=${BRANCH:-main}
REPO=${REPO:-issf-jax}                    # the checkout on every host (relative to ssh's home)
PYTHON=${PYTHON:-python3}                 # Python >= 3.11 on the hosts
PORT=${PORT:-12355}                       # coordinator port on the first host
LOGDIR=${LOGDIR:-logs/gpu_hosts}
CONFIG=${CONFIG:-configs/thumos14.py}
WORKDIR=${WORKDIR:-/shared/runs/thumos14_pod}
SHARDS=${SHARDS:-/shared/data/thumos14_shards}

DRY_RUN=0
if [[ ${1:-} == --dry_run ]]; then DRY_RUN=1; shift; fi
usage="usage: $0 [--dry_run] HOSTFILE setup|train [--config.a.b=value ...]"
HOSTFILE=${1:?$usage}
ACTION=${2:?$usage}
shift 2
mapfile -t HOSTS < <(grep -v '^[[:space:]]*\(#\|$\)' "$HOSTFILE")
((${#HOSTS[@]})) || { echo "$0: error: $HOSTFILE lists no host" >&2; exit 2; }
HEAD=${HOSTS[0]#*@}                       # the coordinator: the first host, without user@

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

remote_command() {  # $1: this host's process index
  case $ACTION in
    setup)
      echo "set -e; if [ -d $(q "$REPO") ]; then git -C $(q "$REPO") fetch -q origin $(q "$BRANCH");" \
        "git -C $(q "$REPO") checkout -q FETCH_HEAD; else git clone -q -b $(q "$BRANCH")" \
        "$(q "$REPO_URL" "$REPO"); fi; cd $(q "$REPO") && $(q "$PYTHON") -m venv .venv" \
        "&& .venv/bin/pip install -q -e '.[cuda12]'" ;;
    train)
      echo "cd $(q "$REPO") && $(q .venv/bin/issf-train --distributed \
        "--coordinator_address=$HEAD:$PORT" "--num_processes=${#HOSTS[@]}" "--process_id=$1" \
        --config "$CONFIG" --workdir "$WORKDIR" "--config.data.shards_dir=$SHARDS" "${ARGS[@]}")" ;;
    *) echo "$0: error: unknown action '$ACTION' (setup or train)" >&2; exit 2 ;;
  esac
}

ARGS=("$@")
((DRY_RUN)) || mkdir -p "$LOGDIR"
pids=()
for i in "${!HOSTS[@]}"; do
  host=${HOSTS[$i]}
  cmd=(ssh -n -o BatchMode=yes "$host" "$(remote_command "$i")")
  log="$LOGDIR/$i-${host#*@}.log"
  if ((DRY_RUN)); then
    echo "$(show "${cmd[@]}") > $(show "$log") 2>&1 &"
  else
    "${cmd[@]}" > "$log" 2>&1 &
    pids+=($!)
  fi
done
((DRY_RUN)) && { echo wait; exit 0; }
trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { status=1; echo "${HOSTS[$i]}: failed, see $LOGDIR/$i-${HOSTS[$i]#*@}.log" >&2; }
done
exit $status
