"""The dependency graph points one way (docs/design.md §1), read from every module's imports.

Layers, lowest first; a module may import its own package and the packages below it only:
  issf_common      errors, paths, the TensorFlow import (nothing of the project)
  data_pipelines   readers, shards, the tf.data pipeline
  issf_jax         the library (the trainer takes its batches from data_pipelines)
  configs          the experiment files
  launch           the commands
  benchmarks       the measuring scripts
No module imports a `_private` module of another package, and the model, the memory bank and the
losses import neither the data layer nor TensorFlow. The imports are parsed (ast), so those
inside functions count too; nothing is imported.
"""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO_DIR

LAYERS = ('issf_common', 'data_pipelines', 'issf_jax', 'configs', 'launch', 'benchmarks')
PACKAGES = (*LAYERS, 'tests')
# Library modules that must stay free of the data layer and of TensorFlow.
PURE = ('issf_jax.model', 'issf_jax.memory', 'issf_jax.losses')
TENSORFLOW = ('tensorflow', 'tensorflow_datasets', 'issf_common.tensorflow_cpu')


def _modules() -> dict[str, ast.Module]:
  """{dotted module name: its parsed source} for every .py file of the project's packages."""
  out = {}
  for package in PACKAGES:
    for path in sorted((REPO_DIR / package).rglob('*.py')):
      parts = path.relative_to(REPO_DIR).with_suffix('').parts
      name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
      out[name] = ast.parse(path.read_text(encoding='utf-8'), str(path))
  return out


def _imports(name: str, tree: ast.Module) -> set[str]:
  """Absolute names of what `name` imports (`from a import b` gives a.b: b may be a module)."""
  package = name.split('.')
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # relative: resolved against the importing module's package
        base = '.'.join(package[: len(package) - node.level] + ([base] if base else []))
      found.add(base)
      found.update(f'{base}.{alias.name}' for alias in node.names)
  return found


MODULES = _modules()
EDGES = {name: _imports(name, tree) for name, tree in MODULES.items()}


def _top(name: str) -> str:
  return name.split('.')[0]


def test_every_package_is_read():
  assert {_top(name) for name in MODULES} == set(PACKAGES)
  assert 'issf_common.errors' in MODULES and 'issf_jax.train.loop' in MODULES


@pytest.mark.parametrize('layer', LAYERS)
def test_imports_point_down(layer):
  allowed = set(LAYERS[: LAYERS.index(layer) + 1])
  wrong = sorted(
    f'{name} imports {target}'
    for name, targets in EDGES.items()
    if _top(name) == layer
    for target in targets
    if _top(target) in LAYERS and _top(target) not in allowed
  )
  assert not wrong, wrong


def test_no_private_module_across_packages():
  wrong = sorted(
    f'{name} imports {target}'
    for name, targets in EDGES.items()
    for target in targets
    if target in MODULES
    and _top(target) != _top(name)
    and any(part.startswith('_') and not part.startswith('__') for part in target.split('.'))
  )
  assert not wrong, wrong


def test_model_memory_and_losses_have_no_data_layer_or_tensorflow():
  wrong = sorted(
    f'{name} imports {target}'
    for name, targets in EDGES.items()
    if any(name == pure or name.startswith(pure + '.') for pure in PURE)
    for target in targets
    if _top(target) == 'data_pipelines' or any(target.startswith(tf) for tf in TENSORFLOW)
  )
  assert not wrong, wrong
