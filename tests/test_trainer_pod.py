"""The trainer as a 2-process pod on localhost (jax.distributed, CPU collectives over gloo).

`launch.train --distributed --coordinator_address=localhost:PORT --num_processes=2
--process_id=i`: each process has one CPU device and reads its half of every global batch of 8;
the Orbax checkpoint is written by both processes into the same directory. The reference is
one process with 2 simulated devices and the same global batch: the final params, optimizer
state and memory must agree within 1e-5 (5 steps: one epoch, the memory init, 2 DEM steps).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from issf_jax.train import restore
from tests.conftest import REPO_DIR, run_python, subprocess_env, train_args

POD_OVERRIDES = {
  'train.batch_size': 8,  # 3 steps per epoch
  'train.num_epochs': 2,
  'train.max_steps': 5,
  'train.memory_init_epoch': 0,  # the memory is built after step 3
  'train.eval_every_epochs': 100,  # evaluated (and saved) at the last step only
  'train.checkpoint_every_epochs': 100,
}
FINAL_STEP = 5
POD_TIMEOUT_S = 540


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _leaves(workdir) -> dict:
  config = restore.load_config(str(workdir))
  state, step = restore.restore_state(config, os.path.join(workdir, 'checkpoints'), 'latest')
  assert step == FINAL_STEP
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def _run_pod(workdir, shards, env, logs) -> None:
  port = _free_port()
  procs = []
  for i in range(2):
    args = train_args(workdir, shards, POD_OVERRIDES) + [
      '--distributed', f'--coordinator_address=localhost:{port}', '--num_processes=2',
      f'--process_id={i}',
    ]  # fmt: skip
    with open(logs[i], 'w') as log:
      procs.append(subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO_DIR, env=env,
                                    stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
  deadline = time.monotonic() + POD_TIMEOUT_S
  try:
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
      if any(p.returncode not in (None, 0) for p in procs):
        break  # one process failed: do not wait for the other's collective timeouts
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  if any(p.returncode != 0 for p in procs):
    tails = '\n'.join(f'--- process {i} (rc {p.returncode})\n{open(logs[i]).read()[-4000:]}'
                      for i, p in enumerate(procs))  # fmt: skip
    pytest.fail(f'the pod run failed:\n{tails}')


@pytest.mark.slow  # ~100-200 s on 2 loaded cores: three trainer processes, two compiling at once
def test_two_process_pod_matches_one_process(tmp_path, tiny_shards, jax_cache_dir):
  reference = tmp_path / 'one_process'
  run_python(
    train_args(reference, tiny_shards, POD_OVERRIDES),
    subprocess_env(jax_cache_dir, num_devices=2),
  )
  pod = tmp_path / 'pod'
  logs = [tmp_path / f'process_{i}.log' for i in range(2)]
  _run_pod(pod, tiny_shards, subprocess_env(jax_cache_dir), logs)

  log0, log1 = (open(p).read() for p in logs)
  assert 'Process 0 of 2, 1 local / 2 global devices' in log0
  assert 'Process 1 of 2, 1 local / 2 global devices' in log1
  assert f'step      {FINAL_STEP}/{FINAL_STEP}' in log0  # only process 0 prints and logs
  assert 'steps/s' not in log1
  assert (pod / 'metrics.jsonl').exists()

  want, got = _leaves(reference), _leaves(pod)
  assert want.keys() == got.keys()
  assert int(got['.step']) == FINAL_STEP and bool(got['.memory.initialized'])
  for key in want:
    assert want[key].shape == got[key].shape and want[key].dtype == got[key].dtype, key
    np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5, err_msg=key)
