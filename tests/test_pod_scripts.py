"""The launch scripts in launch/pods/: what each `--dry_run` prints is the exact command it runs.

Nothing here reaches a cluster: the printed lines are parsed back into words (as a shell would
read them) and checked against what each launcher needs. The Slurm script's command also runs
for real, in two local processes with a Slurm environment (tests/test_trainer_pod.py, slow).
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from tests.conftest import REPO_DIR

PODS = REPO_DIR / 'launch' / 'pods'
SCRIPTS = ['tpu_vm_pod.sh', 'slurm.sbatch', 'gpu_hosts.sh']
OVERRIDES = ['--config.train.batch_size=16', "--config.eval.note=it's two words"]


def _run(script, *args, **env) -> subprocess.CompletedProcess:
  return subprocess.run(
    ['bash', str(PODS / script), *map(str, args)], cwd=REPO_DIR, capture_output=True, text=True,
    env=dict(os.environ, **env), timeout=60,
  )  # fmt: skip


@pytest.mark.parametrize('script', SCRIPTS)
def test_script_parses(script):
  proc = subprocess.run(['bash', '-n', str(PODS / script)], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert os.access(PODS / script, os.X_OK)


def _issf_train(words: list[str]) -> list[str]:
  """The issf-train arguments of a remote `cd issf-jax && .venv/bin/issf-train ...` line."""
  assert words[:4] == ['cd', 'issf-jax', '&&', '.venv/bin/issf-train'], words
  return words[4:]


def test_tpu_vm_pod_train():
  proc = _run('tpu_vm_pod.sh', '--dry_run', 'train', *OVERRIDES, TPU='my-v4-32', ZONE='us-x',
              PROJECT='proj', WORKDIR='gs://b/run', SHARDS='gs://b/shards')  # fmt: skip
  assert proc.returncode == 0 and proc.stderr == '', proc.stderr
  (line,) = proc.stdout.splitlines()
  words = shlex.split(line)
  assert words[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'my-v4-32']
  assert {'--zone=us-x', '--worker=all', '--project=proj'} <= set(words[6:])
  (command,) = [w for w in words if w.startswith('--command=')]
  args = _issf_train(shlex.split(command.removeprefix('--command=')))
  # The slice finds its workers itself: --distributed and no coordinator flags.
  assert args == ['--distributed', '--config', 'configs/thumos14.py', '--workdir', 'gs://b/run',
                  '--config.data.shards_dir=gs://b/shards', *OVERRIDES]  # fmt: skip


def test_tpu_vm_pod_setup_installs_the_tpu_extra():
  proc = _run('tpu_vm_pod.sh', '--dry_run', 'setup', REPO_URL='https://example.org/r.git')
  assert proc.returncode == 0, proc.stderr
  words = shlex.split(proc.stdout)
  assert '--project' not in ' '.join(words)  # PROJECT unset: gcloud's default
  (command,) = [w for w in words if w.startswith('--command=')]
  remote = shlex.split(command.removeprefix('--command='))
  assert 'https://example.org/r.git' in remote
  assert remote[-5:] == ['.venv/bin/pip', 'install', '-q', '-e', '.[tpu]']


def test_tpu_vm_pod_unknown_action():
  proc = _run('tpu_vm_pod.sh', '--dry_run', 'trian')
  assert proc.returncode == 2 and proc.stdout == ''
  assert proc.stderr.splitlines() == [
    f"{PODS / 'tpu_vm_pod.sh'}: error: unknown action 'trian' (setup or train)"
  ]


def test_slurm_one_task_per_host_with_every_gpu():
  proc = _run('slurm.sbatch', '--dry_run', *OVERRIDES, GPUS_PER_NODE='4', CONFIG='c.py',
              WORKDIR='/shared/run', SHARDS='/shared/shards', PYTHON='py')  # fmt: skip
  assert proc.returncode == 0 and proc.stderr == '', proc.stderr
  cd, export, srun = proc.stdout.splitlines()
  assert shlex.split(cd) == ['cd', str(REPO_DIR)]
  assert export == 'export JAX_LOCAL_DEVICE_IDS=0,1,2,3'
  assert shlex.split(srun) == [
    'srun', '--ntasks-per-node=1', '--kill-on-bad-exit=1', 'py', '-m', 'launch.train',
    '--distributed', '--config', 'c.py', '--workdir', '/shared/run',
    '--config.data.shards_dir=/shared/shards', *OVERRIDES,
  ]  # fmt: skip
  header = (PODS / 'slurm.sbatch').read_text()
  assert '#SBATCH --ntasks-per-node=1\n' in header and '#SBATCH --gpus-per-node=8\n' in header


def test_gpu_hosts_train(tmp_path):
  hostfile = tmp_path / 'hosts'
  hostfile.write_text('alice@gpu-a\n# gpu-spare\n\ngpu-b\ngpu-c\n')
  proc = _run('gpu_hosts.sh', '--dry_run', hostfile, 'train', *OVERRIDES, PORT='4000',
              LOGDIR=str(tmp_path / 'logs'))  # fmt: skip
  assert proc.returncode == 0 and proc.stderr == '', proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[-1] == 'wait' and len(lines) == 4
  for i, (line, host) in enumerate(zip(lines, ['alice@gpu-a', 'gpu-b', 'gpu-c'], strict=False)):
    words = shlex.split(line)
    name = host.split('@')[-1]
    assert words[:5] == ['ssh', '-n', '-o', 'BatchMode=yes', host], words
    assert words[6:] == ['>', str(tmp_path / 'logs' / f'{i}-{name}.log'), '2>&1', '&']
    assert _issf_train(shlex.split(words[5])) == [
      '--distributed', '--coordinator_address=gpu-a:4000', '--num_processes=3',
      f'--process_id={i}', '--config', 'configs/thumos14.py', '--workdir',
      '/shared/runs/thumos14_pod', '--config.data.shards_dir=/shared/data/thumos14_shards',
      *OVERRIDES,
    ]  # fmt: skip
  assert not (tmp_path / 'logs').exists()  # a dry run writes nothing


def test_gpu_hosts_setup_and_an_empty_host_file(tmp_path):
  hostfile = tmp_path / 'hosts'
  hostfile.write_text('gpu-a\n')
  proc = _run('gpu_hosts.sh', '--dry_run', hostfile, 'setup')
  assert proc.returncode == 0, proc.stderr
  remote = shlex.split(shlex.split(proc.stdout.splitlines()[0])[5])
  assert remote[-5:] == ['.venv/bin/pip', 'install', '-q', '-e', '.[cuda12]']
  hostfile.write_text('# nobody\n\n')
  proc = _run('gpu_hosts.sh', '--dry_run', hostfile, 'train')
  assert proc.returncode == 2 and proc.stdout == ''
  assert proc.stderr.splitlines() == [f'{PODS / "gpu_hosts.sh"}: error: {hostfile} lists no host']
