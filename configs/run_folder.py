r"""The config of a trained run, read from its run folder: `configs/run_folder.py:RUN_DIR`.

`issf-eval --workdir RUN --config.a.b=v` (an override without --config, e.g. the proposal
range that `issf-eval --sweep_scales` prints) loads the run's own config through this file, so
the overrides apply to the config the run trained with:

  issf-eval --workdir runs/demo/issf --config.eval.proposals.thresholds_start=0.05
  issf-eval --workdir runs/demo/issf --config configs/run_folder.py:runs/demo/issf  # the same

The argument is the run folder (it holds `config.json`).
"""


def get_config(arg=None):
  from issf_common import errors

  if not arg:
    raise errors.ConfigError('configs/run_folder.py needs the run folder: run_folder.py:RUN_DIR')
  from issf_jax.train import run_dir  # the run's config.json, checked as issf-eval checks it

  return run_dir.load_config(arg)
