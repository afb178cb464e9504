"""The trainer as a 2-process pod on localhost (jax.distributed, CPU collectives over gloo).

`launch.train --distributed --coordinator_address=localhost:PORT --num_processes=2
--process_id=i`: each process has one CPU device and reads its half of every global batch of 8;
the Orbax checkpoint is written by both processes into the same directory. The reference is
one process with 2 simulated devices and the same global batch: the final params, optimizer
state and memory must agree within 1e-5 (5 steps: one epoch, the memory init, 2 DEM steps).

The same pod started the Slurm way: the command that `launch/pods/slurm.sbatch --dry_run` prints
(what srun would start on every host), with no coordinator flags, in two local processes whose
environment is what srun gives two one-task hosts (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS,
SLURM_PROCID, SLURM_LOCALID): jax.distributed.initialize() finds the job there.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from issf_jax.train import restore, run_dir
from tests.conftest import (
  REPO_DIR,
  TINY_TRAIN_OVERRIDES,
  config_flags,
  run_python,
  subprocess_env,
  train_args,
)

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
  config = run_dir.load_config(str(workdir))
  state, step = restore.restore_state(config, os.path.join(workdir, 'checkpoints'), 'latest')
  assert step == FINAL_STEP
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def _run_pod(commands, envs, logs) -> None:
  """Starts one process per (command, env); fails the test unless all end with status 0."""
  procs = []
  for command, env, log_path in zip(commands, envs, logs, strict=True):
    with open(log_path, 'w') as log:
      procs.append(subprocess.Popen(list(map(str, command)), cwd=REPO_DIR, env=env,
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


@pytest.fixture(scope='module')
def reference(tmp_path_factory, tiny_shards, jax_cache_dir) -> dict:
  """The final state of one process with 2 simulated devices (the same global batch)."""
  workdir = tmp_path_factory.mktemp('one_process') / 'run'
  run_python(
    train_args(workdir, tiny_shards, POD_OVERRIDES),
    subprocess_env(jax_cache_dir, num_devices=2),
  )
  return _leaves(workdir)


def _check_pod(pod, logs, want) -> None:
  log0, log1 = (open(p).read() for p in logs)
  assert 'Process 0 of 2, 1 local / 2 global devices' in log0
  assert 'Process 1 of 2, 1 local / 2 global devices' in log1
  assert f'step      {FINAL_STEP}/{FINAL_STEP}' in log0  # only process 0 prints and logs
  assert 'steps/s' not in log1
  assert (pod / 'metrics.jsonl').exists()

  got = _leaves(pod)
  assert want.keys() == got.keys()
  assert int(got['.step']) == FINAL_STEP and bool(got['.memory.initialized'])
  for key in want:
    assert want[key].shape == got[key].shape and want[key].dtype == got[key].dtype, key
    np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5, err_msg=key)


@pytest.mark.slow  # ~100-200 s on 2 loaded cores: three trainer processes, two compiling at once
def test_two_process_pod_matches_one_process(tmp_path, tiny_shards, jax_cache_dir, reference):
  pod = tmp_path / 'pod'
  logs = [tmp_path / f'process_{i}.log' for i in range(2)]
  port = _free_port()
  commands = [
    [sys.executable, *train_args(pod, tiny_shards, POD_OVERRIDES), '--distributed',
     f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}']
    for i in range(2)
  ]  # fmt: skip
  _run_pod(commands, [subprocess_env(jax_cache_dir)] * 2, logs)
  _check_pod(pod, logs, reference)


def _sbatch_dry_run(pod, shards) -> tuple[list[str], dict]:
  """The trainer command and environment that launch/pods/slurm.sbatch has srun start."""
  env = dict(os.environ, CONFIG=str(REPO_DIR / 'configs' / 'synthetic.py'), WORKDIR=str(pod),
             SHARDS=str(shards), PYTHON=sys.executable, GPUS_PER_NODE='1')  # fmt: skip
  overrides = config_flags({**TINY_TRAIN_OVERRIDES, **POD_OVERRIDES})
  out = subprocess.run(
    ['bash', 'launch/pods/slurm.sbatch', '--dry_run', *overrides], cwd=REPO_DIR, env=env,
    capture_output=True, text=True, check=True, timeout=60,
  ).stdout.splitlines()  # fmt: skip
  assert shlex.split(out[0]) == ['cd', str(REPO_DIR)]
  assert out[1] == 'export JAX_LOCAL_DEVICE_IDS=0'
  srun = shlex.split(out[2])
  assert srun[:3] == ['srun', '--ntasks-per-node=1', '--kill-on-bad-exit=1'], srun
  command = srun[3:]
  assert command[:4] == [sys.executable, '-m', 'launch.train', '--distributed'], command
  assert not [a for a in command if a.startswith(('--coordinator', '--num_proc', '--process'))]
  assert command[-len(overrides) :] == overrides
  return command, {'JAX_LOCAL_DEVICE_IDS': '0'}


@pytest.mark.slow  # ~70-140 s on 2 loaded cores (the reference is shared with the test above)
def test_slurm_environment_forms_one_job(tmp_path, tiny_shards, jax_cache_dir, reference):
  pod = tmp_path / 'slurm_pod'
  command, script_env = _sbatch_dry_run(pod, tiny_shards)
  # Slurm's own port would be derived from the job id; a free one keeps parallel runs apart.
  port = str(_free_port())
  envs = []
  for i in range(2):  # two hosts of one task each, as srun starts them
    env = subprocess_env(jax_cache_dir)
    env.update(script_env)
    env.update(
      SLURM_JOB_ID='4242', SLURM_STEP_NODELIST='localhost', SLURM_NTASKS='2',
      SLURM_STEP_NUM_NODES='2', SLURM_PROCID=str(i), SLURM_LOCALID='0', JAX_COORDINATOR_PORT=port,
    )  # fmt: skip
    envs.append(env)
  logs = [tmp_path / f'slurm_task_{i}.log' for i in range(2)]
  _run_pod([command, command], envs, logs)
  _check_pod(pod, logs, reference)
