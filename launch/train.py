r"""Trains ISSF: one host or a multi-host pod.

  issf-train --config configs/thumos14.py --workdir runs/thumos14 \
    --config.data.shards_dir=data/thumos14_shards [--config.train.batch_size=10 ...]

On a pod, run the same command on every host with `--distributed` (or ISSF_DISTRIBUTED=1):
it calls `jax.distributed.initialize()` (coordinator from the cluster environment, or
--coordinator_address/--num_processes/--process_id), and each host reads its own slice of
every global batch. The data-parallel step is `jax.jit(jax.shard_map(...))`, the modern form
of pmap.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)  # fmt: skip
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (checkpoints, logs, predictions).')
_DISTRIBUTED = flags.DEFINE_bool(
  'distributed', os.environ.get('ISSF_DISTRIBUTED', '0') == '1',
  'Call jax.distributed.initialize() (multi-host pods).',
)  # fmt: skip
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process.')


def initialize_distributed(coordinator=None, num_processes=None, process_id=None) -> None:
  """jax.distributed.initialize; on CPU the cross-process collectives go through gloo."""
  import jax

  if jax.config.jax_platforms in (None, '', 'cpu') and (num_processes or 0) > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  kwargs = {}
  if coordinator:
    kwargs = dict(
      coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
  jax.distributed.initialize(**kwargs)
  logging.info('Process %d of %d, %d local / %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())  # fmt: skip


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  from issf_jax.train.logs import quiet_libraries

  quiet_libraries()
  if config.train.distributed or _DISTRIBUTED.value:
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from issf_jax.train import loop

  loop.train_and_evaluate(config, _WORKDIR.value)


def run():
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)


if __name__ == '__main__':
  run()
