#!/usr/bin/env bash
# The GPU recipe (benchmarks/gpu_recipe.py) on the GPU machine's fixed image, from the repository
# root. That image has jax with its CUDA plugin, flax, optax, orbax-checkpoint, numpy, absl-py,
# protobuf, tensorboard, ... but no TensorFlow, no tensorflow-datasets and no ml-collections, and
# no network: the recipe runs on the TensorFlow-free path (data_pipelines/numpy_pipeline.py and
# the resident training features), and the missing pure-Python wheels are brought along.
#
#   bash benchmarks/device_run.sh --fetch_wheels   here, once: the wheels into benchmarks/wheels/
#   bash benchmarks/device_run.sh [--dry_run] [RECIPE FLAGS...]   there (or --dry_run anywhere)
#
# On the GPU machine it installs benchmarks/wheels/*.whl with `pip install --no-index --target`,
# puts that folder and the repository on PYTHONPATH, writes the versions and the GPU it sees to
# $OUT/env.txt, and runs the recipe under `timeout` (RECIPE_LIMIT_S, 390 s: with the start and
# the install the call takes about 7 minutes, so a rerun still fits in the 10 minutes of device
# time a session is given) with its internal budget RECIPE_BUDGET_S (330 s: the 180 epochs run
# only if the probe says they fit). The report goes to $OUT/gpu_recipe.json (rewritten after each
# part, so a run stopped by the time limit keeps what it finished) and the log to
# $OUT/gpu_recipe.log. JAX's compilation cache is kept in /tmp, so a rerun on the same warm
# machine compiles less. --dry_run prints the commands and runs nothing.
#
# With this workplace's device tool: fill benchmarks/wheels/ in the checkout that the call sends
# (--fetch_wheels; PYTHON=a python with pip), then run command "bash benchmarks/device_run.sh",
# carry ["benchmarks/wheels"], timeout_s 420; $OUT/gpu_recipe.json comes back.
set -euo pipefail

WHEELS=benchmarks/wheels
# Pure-Python wheels the image lacks (name==version), with their sizes in gpu_recipe.py's docstring.
REQUIREMENTS=(ml-collections==1.1.0)
PY=${PYTHON:-python3}
SITE=${ISSF_SITE:-/tmp/issf-site}
OUT_DIR=${OUT:-runs/device}
LIMIT_S=${RECIPE_LIMIT_S:-390}
BUDGET_S=${RECIPE_BUDGET_S:-330}

dry=0
fetch=0
recipe_flags=()
for arg in "$@"; do
  case "$arg" in
    --dry_run) dry=1 ;;
    --fetch_wheels) fetch=1 ;;
    *) recipe_flags+=("$arg") ;;
  esac
done

run() {  # prints the command; runs it unless --dry_run
  echo "$*"
  if [ "$dry" = 0 ]; then "$@"; fi
}

if [ "$fetch" = 1 ]; then
  run mkdir -p "$WHEELS"
  run "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d "$WHEELS" "${REQUIREMENTS[@]}"
  exit 0
fi

if [ "$dry" = 0 ] && ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then
  echo "$WHEELS/ holds no wheels: run 'bash benchmarks/device_run.sh --fetch_wheels' where pip" \
    "reaches PyPI, and carry $WHEELS to the GPU machine" >&2
  exit 2
fi

run mkdir -p "$OUT_DIR" "$SITE"
run "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "$WHEELS"/*.whl
echo "export PYTHONPATH=$SITE:$PWD"
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/issf-jax-cache}
export PYTHONUNBUFFERED=1
if [ "$dry" = 0 ]; then
  {
    nvidia-smi -L || true
    "$PY" --version
    "$PY" -c 'import jax; print("jax", jax.__version__, jax.devices())' || true
    "$PY" -m pip list 2> /dev/null | grep -iE \
      '^(jax|jaxlib|flax|optax|orbax|chex|numpy|ml.collections|absl|etils|protobuf|tensorboard|scipy|tensorflow|msgspec)' || true
  } > "$OUT_DIR/env.txt" 2>&1
fi
set -o pipefail
cmd=(timeout "${LIMIT_S}s" "$PY" -m benchmarks.gpu_recipe --scale full --epochs auto
  --time_limit_s "$BUDGET_S" --json "$OUT_DIR/gpu_recipe.json" "${recipe_flags[@]}")
echo "${cmd[*]}"
if [ "$dry" = 0 ]; then
  "${cmd[@]}" 2>&1 | tee "$OUT_DIR/gpu_recipe.log"
fi
