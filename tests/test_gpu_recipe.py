"""benchmarks/gpu_recipe.py at tiny scale on the CPU: it runs; its table and JSON are complete."""

from __future__ import annotations

import json
import math

from tests.conftest import REPO_DIR, run_python, subprocess_env

PARITY = REPO_DIR / 'tests' / 'testdata' / 'rskp_parity'
RECIPE_KEYS = {
  'epochs', 'steps_per_epoch', 'steps_warmup', 'steps_memory', 'evals', 'checkpoints', 'wall_s',
  'phase_wall_s', 'phase_compile_s', 'compile_s', 'step_s_warmup', 'step_s_memory',
  'memory_init_s', 'eval_s', 'checkpoint_s',
}  # fmt: skip


def test_gpu_recipe_tiny(tmp_path, jax_cache_dir):
  out = tmp_path / 'report.json'
  # No time for the 180 epochs: the probe runs and the recipe is extrapolated from it.
  args = ['-m', 'benchmarks.gpu_recipe', '--scale', 'tiny', '--time_limit_s', '0', '--json', out]
  args += ['--drift_steps', '2', '--workdir', tmp_path / 'work', '--annotations', '']
  args += ['--parity_dir', PARITY]
  proc = run_python(args, subprocess_env(jax_cache_dir))
  report = json.loads(out.read_text())

  # The probe's schedule: 24 videos / batch 4 = 6 steps per epoch, 4 epochs, memory built after
  # epoch 1 (0-based), evaluated and checkpointed after epochs 2 and 4.
  probe = report['probe']
  assert RECIPE_KEYS <= set(probe) and 'recipe' not in report
  assert (probe['epochs'], probe['steps_per_epoch']) == (4, 6)
  assert (probe['steps_warmup'], probe['steps_memory']) == (12, 12)
  assert (probe['evals'], probe['checkpoints']) == (2, 2)
  # Compile time is apart from the steady step time, and every phase compiled something.
  assert probe['compile_s'] > 0
  assert {'train_warmup', 'train_memory', 'memory_init', 'eval'} <= set(probe['phase_compile_s'])
  for phase, seconds in probe['phase_compile_s'].items():
    assert 0 < seconds <= probe['phase_wall_s'][phase] + 1e-6, phase
  assert probe['step_s_warmup'] > 0 and probe['step_s_memory'] > 0
  # The 180-epoch figure is an extrapolation (3,600 steps... here 1,080 of 6 per epoch, 36
  # evaluations) and says so.
  assert report['extrapolated'] is True and report['recipe_180_epochs_s'] > probe['wall_s']
  assert 'EXTRAPOLATED' in proc.stdout and 'compile' in proc.stdout
  steady = 1080 * min(probe['step_s_warmup'], probe['step_s_memory']) + 36 * probe['eval_s']
  assert report['recipe_180_epochs_s'] >= steady

  precision = report['precision']
  assert precision['steps'] == 2
  for name in ('float32', 'tensorfloat32', 'float32_repeat'):
    assert precision[name]['step_s'] > 0 and math.isfinite(precision[name]['final_loss'])
  for name in ('tensorfloat32', 'float32_repeat'):
    assert precision[name]['param_drift_rel_update'] >= 0
  # On the CPU the step is deterministic and float32 matmuls are float32 whatever the setting.
  assert precision['float32_repeat']['param_drift_max_abs'] == 0.0
  assert precision['tensorfloat32']['param_drift_max_abs'] == 0.0
  assert 'matmul precision' in proc.stdout

  if PARITY.is_dir():
    errors = report['parity']['max_abs_error']
    assert errors['float32']['embedded'] == 0.0 and max(errors['float32'].values()) <= 1e-5
  else:
    assert report['parity'] is None
