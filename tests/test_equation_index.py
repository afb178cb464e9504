"""docs/design.md §2.0 names, for every equation, the function that computes it; each must exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

DESIGN = Path(__file__).resolve().parents[1] / 'docs' / 'design.md'
NAME = re.compile(r'`([\w/]+)\.py:([\w.]+)`')


def _index_rows() -> list[str]:
  text = DESIGN.read_text()
  section = text.split('### 2.0 Equation index', 1)[1].split('\n### ', 1)[0]
  return [line for line in section.splitlines() if line.startswith('| ') and '`' in line]


def test_every_equation_has_a_row():
  first_cells = ' '.join(row.split('|')[1] for row in _index_rows())
  for number in range(1, 12):
    assert re.search(rf'Eq\. (\d+-)?{number}\b|Eq\. {number}-', first_cells), number


def test_every_named_function_exists():
  names = [m for row in _index_rows() for m in NAME.findall(row)]
  assert len(names) >= 20
  for path, attr in names:
    module = importlib.import_module('issf_jax.' + path.replace('/', '.'))
    obj = module
    for part in attr.split('.'):
      assert hasattr(obj, part), f'issf_jax/{path}.py has no {attr}'
      obj = getattr(obj, part)
    assert callable(obj), f'{path}.py:{attr} is not callable'
