"""The paper's ablation tables as lists of config arguments: the one place the rows live.

A row is (key, label, config arguments, the paper's THUMOS14 numbers); the rows are data, in
`paper_tables.json` beside this module. Its arguments are
`get_config(arg)` arguments of `configs/*.py` (see `configs/common.py`), so a row is
exactly what `issf-train --config configs/<x>.py:<args>` would train. Harness-wide arguments
(`issf-repro --config_args recipe=spec_v1`) are merged into every row by `row_args`; a key that
the table itself varies cannot be set harness-wide (it would make every row the same). Several
sets separated by ';' repeat the table under each (`expand`).

The paper's numbers (AAAI 2024, THUMOS14, I3D features, `rskp` protocol) are kept beside each
row for reference only: average mAP over tIoU 0.1:0.7 and mAP@0.5, in %. In Table 4 the
extracted text of the Base+BRM mAP@0.5 cell reads '29.3 32.6', so that cell is left unknown.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json


@dataclasses.dataclass(frozen=True)
class Row:
  key: str  # short id for --rows
  label: str  # as the paper names the row
  args: str  # 'a=x,b=y' config arguments
  paper_avg: float | None = None  # average mAP 0.1:0.7 (%), THUMOS14
  paper_map50: float | None = None  # mAP@0.5 (%), THUMOS14


@dataclasses.dataclass(frozen=True)
class Table:
  name: str
  title: str
  rows: tuple[Row, ...]


def _load_tables() -> dict[str, Table]:
  """The tables of `paper_tables.json` (data beside this module, shipped as package data)."""
  text = importlib.resources.files(__package__).joinpath('paper_tables.json').read_text()
  return {
    name: Table(name, table['title'], tuple(Row(**row) for row in table['rows']))
    for name, table in json.loads(text).items()
  }


TABLES = _load_tables()


def parse_args(args: str) -> dict[str, str]:
  """'a=x,b=y' -> {'a': 'x', 'b': 'y'} (the empty string -> {}); later keys win."""
  out = {}
  for item in filter(None, (s.strip() for s in (args or '').split(','))):
    if '=' not in item:
      raise ValueError(f'Config argument {item!r} is not key=value (in {args!r}).')
    key, value = item.split('=', 1)
    out[key.strip()] = value.strip()
  return out


def format_args(args: dict[str, str]) -> str:
  return ','.join(f'{k}={v}' for k, v in args.items())


def get_table(name: str, rows: str = '') -> Table:
  """The table `name` ('3'..'6', 'table4' also accepted), optionally only the `rows` keys
  (comma-separated, in the table's order)."""
  name = str(name).lower().removeprefix('table')
  if name not in TABLES:
    raise ValueError(f"Unknown table {name!r}; the paper's ablation tables are {sorted(TABLES)}.")
  table = TABLES[name]
  if not rows:
    return table
  wanted = [r.strip() for r in rows.split(',') if r.strip()]
  known = [r.key for r in table.rows]
  unknown = [r for r in wanted if r not in known]
  if unknown:
    raise ValueError(f'Table {name} has no row {unknown[0]!r}; its rows are {known}.')
  return dataclasses.replace(table, rows=tuple(r for r in table.rows if r.key in wanted))


def varied_keys(table: Table) -> set[str]:
  """The config-argument keys the rows of `table` set."""
  return {k for row in table.rows for k in parse_args(row.args)}


def row_args(table: Table, row: Row, extra: str = '') -> str:
  """The row's arguments with the harness-wide `extra` ones merged in (`extra` first).

  Raises ValueError when `extra` sets a key that the table varies.
  """
  extra_args = parse_args(extra)
  clash = sorted(set(extra_args) & varied_keys(table))
  if clash:
    raise ValueError(
      f'--config_args sets {clash[0]!r}, which Table {table.name} varies across its rows; '
      'drop it (or use --rows to pick rows).'
    )
  return format_args({**extra_args, **parse_args(row.args)})


def expand(table: Table, arg_sets: str) -> Table:
  """Every row under every harness-wide argument set: `arg_sets` holds sets separated by ';'
  ('recipe=authors;recipe=spec_v1'). One set (or none) keeps the rows' keys and labels; with
  several, row `base` under set i becomes key `base@i` and label 'Base [<set i>]', grouped by
  set. Each set is merged as `row_args` does (a key the table varies is an error)."""
  sets = [a.strip() for a in (arg_sets or '').split(';')]
  sets = [a for a in sets if a] or ['']
  if len(sets) == 1:
    rows = tuple(dataclasses.replace(r, args=row_args(table, r, sets[0])) for r in table.rows)
    return dataclasses.replace(table, rows=rows)
  rows = tuple(
    dataclasses.replace(
      r, key=f'{r.key}@{i}', label=f'{r.label} [{extra}]', args=row_args(table, r, extra)
    )  # fmt: skip
    for i, extra in enumerate(sets)
    for r in table.rows
  )
  return dataclasses.replace(table, rows=rows)
