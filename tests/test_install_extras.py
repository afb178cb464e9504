"""The accelerator extras resolve against PyPI: `pip install -e '.[cuda12]'`, cuda13 and tpu.

`pip install --dry-run --ignore-installed --report -` resolves the whole install (nothing is
downloaded beyond metadata, nothing installed) and says which versions it would take. The
accelerator build must match jax exactly (jaxlib, the CUDA plugin and its PJRT, or libtpu), and the
extras must not move jax off the core range: on Python 3.11 that is jax 0.10.2 (the newest there).
Needs PyPI (skipped when pypi.org cannot be reached) and about 15-50 s per extra: marked slow.
`ISSF_TEST_PYTHONS` may name more interpreters (each with pip), e.g. a Python 3.12 venv's python.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO_DIR

pytestmark = pytest.mark.slow

PYTHONS = [sys.executable, *filter(None, os.environ.get('ISSF_TEST_PYTHONS', '').split(os.pathsep))]
# extra -> packages that must come in at jax's own version (libtpu is versioned apart).
ACCELERATOR_BUILDS = {
  'cuda12': ('jaxlib', 'jax-cuda12-plugin', 'jax-cuda12-pjrt'),
  'cuda13': ('jaxlib', 'jax-cuda13-plugin', 'jax-cuda13-pjrt'),
  'tpu': ('jaxlib',),
}


def _pypi_reachable() -> bool:
  try:
    socket.create_connection(('pypi.org', 443), timeout=5).close()
    return True
  except OSError:
    return False


def _version_tuple(version: str) -> tuple[int, ...]:
  return tuple(int(p) for p in version.split('.')[:3])


@pytest.mark.skipif(not _pypi_reachable(), reason='pypi.org cannot be reached')
@pytest.mark.parametrize('python', PYTHONS)
@pytest.mark.parametrize('extra', sorted(ACCELERATOR_BUILDS))
def test_extra_resolves(python, extra):
  proc = subprocess.run(
    [python, '-m', 'pip', 'install', '--dry-run', '--ignore-installed', '--quiet',
     '--disable-pip-version-check', '--report', '-', '-e', f'.[{extra}]'],
    cwd=REPO_DIR, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads(proc.stdout)
  versions = {item['metadata']['name'].lower().replace('_', '-'): item['metadata']['version']
              for item in report['install']}  # fmt: skip
  jax = versions['jax']
  assert (0, 10, 2) <= _version_tuple(jax) < (0, 13), jax  # pyproject's core range
  py = tuple(int(p) for p in report['environment']['python_version'].split('.')[:2])
  if py == (3, 11):
    assert jax == '0.10.2'  # the newest jax for Python 3.11
  for name in ACCELERATOR_BUILDS[extra]:
    assert versions.get(name) == jax, (name, versions.get(name), jax)
  if extra == 'tpu':
    assert 'libtpu' in versions
  else:
    assert 'libtpu' not in versions and f'nvidia-cudnn-cu{extra[-2:]}' in versions
  assert 'issf-jax' in versions and 'flax' in versions
