"""What `issf-train` prints (issue 10): each evaluation table once, epochs counted alike in the
progress lines and the evaluation headers, no library noise, strict-JSON files.

Reads the console output of conftest's `tiny_run` (24 steps, 6 per epoch, evaluations at the
end of epochs 2 and 4).
"""

from __future__ import annotations

import json
import re


def _refuse(token):
  raise ValueError(f'non-strict JSON token {token}')


def _strict_load(path):
  with open(path) as f:
    return json.load(f, parse_constant=_refuse)


def test_each_evaluation_is_printed_once(tiny_run):
  out = (tiny_run.parent / 'stdout.txt').read_text()
  err = (tiny_run.parent / 'stderr.txt').read_text()
  assert out.count('Evaluation at step 12 (epoch 2):') == 1, out
  assert out.count('Evaluation at step 24 (epoch 4):') == 1, out
  assert out.count('protocol: rskp') == 2
  assert 'Evaluation at step' not in err and 'protocol: rskp' not in err  # not logged as well
  # The "no proposal" fact: once per evaluation that has it (in the table), not also warned.
  early = sum(_strict_load(tiny_run / 'eval' / f'step_{s}.json')['early_return_zero']
              for s in (12, 24))  # fmt: skip
  assert (out + err).count('have no proposal') == early


def test_progress_epochs_match_the_evaluation_epochs(tiny_run):
  out = (tiny_run.parent / 'stdout.txt').read_text()
  progress = re.findall(r'^epoch +(\d+) +step +(\d+)/24 ', out, flags=re.M)
  assert [(int(e), int(s)) for e, s in progress] == [(1, 6), (2, 12), (3, 18), (4, 24)], out


def test_no_library_noise(tiny_run):
  err = (tiny_run.parent / 'stderr.txt').read_text()
  assert 'tracked_metric' not in err  # Orbax, on each save without an evaluation
  assert 'Traceback' not in err


def test_run_files_are_strict_json(tiny_run):
  with open(tiny_run / 'metrics.jsonl') as f:
    for line in f:
      json.loads(line, parse_constant=_refuse)
  for step in (12, 24):
    result = _strict_load(tiny_run / 'eval' / f'step_{step}.json')
    assert 'mAP' in result
