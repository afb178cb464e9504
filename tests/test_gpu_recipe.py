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
  args = ['-m', 'benchmarks.gpu_recipe', '--scale', 'tiny', '--drift_steps', '2', '--json', out]
  args += ['--workdir', tmp_path / 'work', '--annotations', '', '--parity_dir', PARITY]
  proc = run_python(args, subprocess_env(jax_cache_dir))
  report = json.loads(out.read_text())

  # The schedule of the tiny run: 24 videos / batch 4 = 6 steps per epoch, 2 epochs, memory
  # built after epoch 0, evaluated and checkpointed after each epoch.
  recipe = report['recipe']
  assert RECIPE_KEYS <= set(recipe)
  assert (recipe['epochs'], recipe['steps_per_epoch']) == (2, 6)
  assert (recipe['steps_warmup'], recipe['steps_memory'], recipe['evals']) == (6, 6, 2)
  # Compile time is apart from the steady step time, and every phase compiled something.
  assert recipe['compile_s'] > 0
  assert {'train_warmup', 'train_memory', 'memory_init', 'eval'} <= set(recipe['phase_compile_s'])
  for phase, seconds in recipe['phase_compile_s'].items():
    assert 0 < seconds <= recipe['phase_wall_s'][phase] + 1e-6, phase
  assert recipe['step_s_warmup'] > 0 and recipe['step_s_memory'] > 0
  # Two epochs are not the recipe: the 180-epoch figure is an extrapolation and says so.
  assert report['extrapolated'] is True and report['recipe_180_epochs_s'] > recipe['wall_s']
  assert 'EXTRAPOLATED' in proc.stdout and 'compile' in proc.stdout

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
