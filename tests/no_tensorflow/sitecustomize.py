"""Makes TensorFlow, tensorflow-datasets and msgspec absent from this interpreter, as on the GPU
machines' fixed image (none of them installed there): put this folder first on PYTHONPATH.
Each finder of sys.meta_path is wrapped so that it finds nothing of them: `import` raises
ModuleNotFoundError and `importlib.util.find_spec` returns None, as when they are not installed
(etils, under orbax, asks find_spec). Used by tests/test_gpu_recipe_no_tensorflow.py."""

import sys

BLOCKED = ('tensorflow', 'tensorflow_datasets', 'msgspec')


class _Hiding:
  def __init__(self, finder):
    self._finder = finder

  def find_spec(self, fullname, path=None, target=None):
    if fullname.split('.')[0] in BLOCKED:
      return None
    return self._finder.find_spec(fullname, path, target)

  def __getattr__(self, name):  # invalidate_caches, find_distributions, ...
    return getattr(self._finder, name)


sys.meta_path[:] = [_Hiding(f) if hasattr(f, 'find_spec') else f for f in sys.meta_path]
