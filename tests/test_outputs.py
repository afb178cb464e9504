"""issf_common/outputs.py: every output is written whole or not at all, and a failure is one
line naming the file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from issf_common import errors, outputs


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path):
  path = tmp_path / 'sub' / 'out.json'  # the folder is created
  outputs.write_json(path, {'a': np.float32(1.5), 'b': [math.nan, np.int64(3)], 'c': np.ones(2)})
  assert json.loads(path.read_text()) == {'a': 1.5, 'b': [None, 3], 'c': [1.0, 1.0]}
  outputs.write_text(path, 'second')
  assert path.read_text() == 'second'
  assert sorted(p.name for p in path.parent.iterdir()) == ['out.json']


def test_a_failed_write_keeps_the_old_file_and_names_it(tmp_path):
  """A write that fails half-way (here: the payload cannot be encoded, and a folder where the
  file goes) leaves the earlier file as it was and no temporary beside it."""
  path = tmp_path / 'out.txt'
  path.write_text('old')
  with pytest.raises(UnicodeEncodeError):
    outputs.write_text(path, '\ud800')  # a lone surrogate: the encoding fails before any write
  (tmp_path / 'dir.json').mkdir()
  with pytest.raises(outputs.OutputError, match=r'dir\.json: cannot be written') as err:
    outputs.write_json(tmp_path / 'dir.json', {})
  assert isinstance(err.value, errors.InputError) and isinstance(err.value, OSError)
  assert path.read_text() == 'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['dir.json', 'out.txt']


def test_check_writable(tmp_path):
  outputs.check_writable(tmp_path / 'new' / 'deeper', '--workdir')  # a parent is writable
  assert list(tmp_path.iterdir()) == []  # and nothing was created
  (tmp_path / 'file').write_text('')
  with pytest.raises(outputs.OutputError, match='--out .*file/x: .*file is a file'):
    outputs.check_writable(tmp_path / 'file' / 'x', '--out')
  with pytest.raises(outputs.OutputError, match='--out /sys/x: /sys cannot be written'):
    outputs.check_writable('/sys/x', '--out')  # read-only even for root


def test_devices_are_written_in_place_and_links_followed(tmp_path):
  """/dev/full (a device: renaming over it would replace it) is written in place, and fails
  with ENOSPC; a link to a file keeps being a link, to the new content."""
  import os

  if os.path.exists('/dev/full'):
    with pytest.raises(outputs.OutputError, match='No space left on device'):
      outputs.write_bytes('/dev/full', b'x')
    assert not os.path.isfile('/dev/full')
  (tmp_path / 'target.txt').write_text('old')
  (tmp_path / 'link.txt').symlink_to(tmp_path / 'target.txt')
  outputs.write_text(tmp_path / 'link.txt', 'new')
  assert (tmp_path / 'link.txt').is_symlink() and (tmp_path / 'target.txt').read_text() == 'new'
