r"""Trains ISSF on a shard folder written by issf-prepare, on one host or a multi-host pod.
The run folder (--workdir) receives the config (config.json), the checkpoints, metrics.jsonl,
TensorBoard logs, and the predictions/ and eval/ of every periodic evaluation. Started again
with the same --workdir, it resumes from the latest checkpoint; a config that would change the
training (any key but the evaluation and logging settings) is refused unless
--allow_config_change is given. One issf-train at a time per run folder: a second one on the
same --workdir stops with the first one's pid (a lock on <workdir>/.lock, freed when it ends).

usage:
  issf-train --config configs/thumos14.py --workdir runs/thumos14 \
    --config.data.shards_dir=data/thumos14_shards [--config.train.batch_size=10 ...]
  issf-train --config configs/thumos14.py:recipe=spec_v1 --show_config [--config.a.b=v ...]

Compiled programs are kept in a persistent cache (--compilation_cache: default
$JAX_COMPILATION_CACHE_DIR if set, else ~/.cache/issf-jax/xla; 'off' turns it off), so a
second run of the same shapes compiles nothing; the run ends with a line counting them.

--show_config prints the resolved config (every section of configs/common.py, after the
experiment file, its arguments and the overrides) and exits 0; nothing is read or written.

--config FILE[:ARGS] picks the experiment file (ablations as ARGS, e.g. saliency=l2) and every
--config.a.b=value overrides one field. On a pod, run the same command on every host with
--distributed (or ISSF_DISTRIBUTED=1): it calls jax.distributed.initialize() (coordinator from
the cluster environment, or --coordinator_address/--num_processes/--process_id), and each host
reads its own slice of every global batch.
"""

from __future__ import annotations

import logging as logging_std
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from launch import cli

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
_SHOW_CONFIG = flags.DEFINE_bool(
  'show_config', False, 'Print the resolved config and exit (no --workdir needed).'
)
_COMPILATION_CACHE = flags.DEFINE_string('compilation_cache', '', cli.COMPILATION_CACHE_HELP)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
  'allow_config_change', False,
  'Resume even though the config differs from the run\'s config.json in keys that change the '
  'training (the old config.json is kept as config.before_step_N.json).',
)  # fmt: skip


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
  del argv
  config = _CONFIG.value
  if _SHOW_CONFIG.value:
    print(config, end='')  # YAML, keys sorted, lazy references resolved
    return 0
  from issf_common import outputs, paths

  outputs.check_writable(_WORKDIR.value, '--workdir')  # before any work (or a file, not a folder)
  if config.data.shards_dir:
    # Absolute: the run's config.json is read from other folders (issf-eval, issf-predict).
    config.data.shards_dir = paths.absolute(config.data.shards_dir)

  from issf_jax import compile_cache

  compile_cache.configure(_COMPILATION_CACHE.value)
  if config.train.distributed or _DISTRIBUTED.value:
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from issf_jax.train import loop
  from launch import reporting

  logging_std.getLogger('absl').addFilter(_DropDiskFullReports())
  try:
    loop.train_and_evaluate(
      config, _WORKDIR.value, reporter=reporting.ConsoleReporter(),
      allow_config_change=_ALLOW_CONFIG_CHANGE.value,
    )  # fmt: skip
    logging.info('%s', compile_cache.COUNTER.summary())
  except KeyboardInterrupt:
    code = interrupted(_WORKDIR.value)  # the trainer's `finally` has saved and closed by now
    # Exit at once: unwinding on would free the live tf.data pipeline with the interrupt's
    # traceback, and its iterator's destructor can wait forever there for worker threads
    # that need the GIL (seen under load: the process hung after Ctrl-C, or ran on).
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  except Exception as err:
    reason = disk_full(err)
    if reason is None:
      raise
    workdir = _WORKDIR.value
    cli.fail('issf-train', f'--workdir {workdir}: no space left on its device ({reason}); free '
             f'space and the same command resumes from {resume_point(workdir)}')  # fmt: skip


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


def resume_point(workdir: str) -> str:
  """Where the same command resumes the run: 'its last checkpoint, step N' or the start."""
  from issf_common import paths

  folder = paths.path(paths.join(workdir, 'checkpoints'))
  # Orbax gives a save its step's name only once the save is complete.
  names = [p.name for p in folder.iterdir()] if folder.exists() else []
  steps = sorted(int(n) for n in names if n.isdigit())
  return f'its last checkpoint, step {steps[-1]}' if steps else 'the start (no checkpoint yet)'


def interrupted(workdir: str) -> int:
  """Prints where a run stopped by Ctrl-C resumes, as one line; returns the exit status."""
  print(f'issf-train: interrupted; the same command resumes {workdir} from '
        f'{resume_point(workdir)}', file=sys.stderr, flush=True)  # fmt: skip
  return EXIT_INTERRUPTED


def disk_full(err: BaseException) -> str | None:
  """A short reason when `err` (or its cause) is a full disk, else None. Orbax's writers
  report it as tensorstore's RESOURCE_EXHAUSTED "Error writing" (a ValueError), the other
  writers as an OSError with errno ENOSPC."""
  import errno

  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
      return f'{err.filename or ""}: {err.strerror}'.lstrip(': ')
    if _is_disk_full_text(str(err)):
      return 'a checkpoint could not be written'
    err = err.__cause__ or err.__context__
  return None


def _is_disk_full_text(text: str) -> bool:
  return 'No space left on device' in text or (
    'RESOURCE_EXHAUSTED' in text and ('Error writing' in text or 'Failed writing' in text)
  )


class _DropDiskFullReports(logging_std.Filter):
  """Orbax's threads log a full disk with a traceback each (4 of them) before the save fails
  in the main thread, where `main` reports it as one line."""

  def filter(self, record) -> bool:
    text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else '')
    return not _is_disk_full_text(text)


def run():
  flags.mark_flags_as_required(['config'])
  flags.register_multi_flags_validator(
    ['workdir', 'show_config'], lambda values: bool(values['workdir'] or values['show_config']),
    message='--workdir is required (except with --show_config)',
  )  # fmt: skip
  cli.run_absl(main, sys.modules[__name__], 'issf-train')


if __name__ == '__main__':
  run()
