"""Reading an ActivityNet-format predictions file fast (msgspec), with the stdlib as the fallback.

A 472,800-prediction ActivityNet file (50 MB) takes about 1 s to `json.load` into half a million
dicts and as long again to check and flatten. msgspec decodes it straight into typed structs
(`_Prediction`), checking every type as it parses, in about a quarter of that; the columns are
then pulled out with C-level `map`s (`ground_truth.predictions_from_columns`).

The typed decoder accepts a subset of what the stdlib path accepts, never more: numbers must be
JSON numbers (no booleans, strings, NaN or Infinity literals), labels strings, segments [s, e]
pairs, and the file an object with a "results" object. Anything else (a malformed file, a label
that is a number, a bare results object) is decoded again by `json.loads` and returned as a dict,
so that `ground_truth.parse_predictions` accepts it or raises its usual error naming the entry, and
a file that is not JSON raises the stdlib's `json.JSONDecodeError`. Both paths give bit-identical
arrays (`tests/test_eval_prediction_file.py`). Without msgspec installed, every file takes the
stdlib path.

When the caller knows the label set (`labels=`, the ground truth's classes and taxonomy), the
decoder checks each label against it and hands back the set's own string objects instead of a new
string per prediction: at ActivityNet size that is 472,800 fewer allocations and hash
computations. A label outside the set is not an error here: the file takes the stdlib path, where
`evaluate_official` raises its usual error naming the label (or warns of a taxonomy class).
"""

import functools
import gc
import itertools
import json
import mmap
import operator
import os
import typing

import numpy as np

from issf_common import paths
from issf_jax.evaluation import ground_truth as gt_lib

try:
  import msgspec
except ImportError:  # An optional speed-up: the stdlib path gives the same result.
  msgspec = None

if msgspec is not None:

  class _Prediction(msgspec.Struct, gc=False):
    """One prediction; extra keys are ignored, as the stdlib path does."""

    label: str
    score: float
    segment: tuple[float, float]

  class _PredictionFile(msgspec.Struct, gc=False):
    results: dict[str, list[_Prediction]]

  _DECODER = msgspec.json.Decoder(_PredictionFile)


@functools.lru_cache(maxsize=4)
def _decoder_for_labels(labels: tuple):
  """A typed decoder whose labels must be one of `labels` (decoded to those very objects)."""
  prediction = msgspec.defstruct(
    'Prediction',
    [('label', typing.Literal[labels]), ('score', float), ('segment', tuple[float, float])],
    gc=False,
  )
  prediction_file = msgspec.defstruct(
    'PredictionFile', [('results', dict[str, list[prediction]])], gc=False
  )
  return msgspec.json.Decoder(prediction_file)


def load_predictions(path: str | os.PathLike, *, fast: bool = True, labels=None):
  """Reads a predictions file.

  Args:
    path: the JSON file, local or a URL (`issf_common/paths.py`).
    fast: use msgspec when it is installed (False: always the stdlib path, for comparison).
    labels: optional iterable of the label names a prediction may have (the ground truth's);
      the typed decoder then shares their string objects. Any other label sends the file to the
      stdlib path. The result is the same with or without it.

  Returns:
    `ground_truth.Predictions` (flattened) when the file passes the typed decoder, else the dict
    from `json.loads` (for `ground_truth.parse_predictions`, which flattens it or raises
    `FormatError`). `evaluation.evaluate_official` takes either.

  Raises:
    OSError, UnicodeDecodeError, json.JSONDecodeError: as `json.load` of the file would.
  """
  if fast and msgspec is not None:
    with paths.open_file(path, 'rb') as f:
      try:  # Decoding from the page cache saves copying the file (50 MB at ActivityNet size).
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
      except (OSError, ValueError, AttributeError):  # An empty file, a pipe, a URL: read it.
        data = f.read()
    try:
      flat = _decode_typed(data, labels)
      # A JSON object keeps the last of two equal keys: a video listed twice would lose its
      # first list silently. Counting "segment" in the bytes is one C-level pass; only when
      # the count differs from the predictions decoded is the file parsed again to name it.
      if flat is not None and data[:].count(b'"segment"') == len(flat):
        return flat
      return _loads_checked(data[:])  # The stdlib parser takes bytes, not a mapping.
    finally:
      if isinstance(data, mmap.mmap):
        data.close()
  with paths.open_file(path, 'rb') as f:
    return _loads_checked(f.read())


def _loads_checked(data: bytes):
  """`json.loads`, refusing an object with a key twice (a video id listed twice in "results")."""
  repeated = []

  def pairs_hook(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys) and not repeated:
      repeated.append(next(k for k in keys if keys.count(k) > 1))
    return dict(pairs)

  out = json.loads(data, object_pairs_hook=pairs_hook)
  if repeated:
    raise gt_lib.FormatError(
      f'key {repeated[0]!r} appears twice in one object (a video listed twice in "results" '
      'would keep only its last list)'
    )
  return out


def _decode_typed(data, labels) -> gt_lib.Predictions | None:
  """The typed decode and flattening, or None if the typed decoder rejects the file."""
  # The decode allocates about three objects per prediction and keeps them all: the cyclic
  # collector's passes over them are pure overhead (about a third of the decode time at
  # ActivityNet size), so it is paused for the decode and the flattening.
  collecting = gc.isenabled()
  gc.disable()
  known = tuple(sorted({x for x in labels or () if isinstance(x, str)}))
  decoder = _decoder_for_labels(known) if known else _DECODER
  try:
    return _flatten(decoder.decode(data).results)
  except msgspec.DecodeError:  # Includes ValidationError: let the stdlib path judge the file.
    return None
  finally:
    if collecting:
      gc.enable()


def _flatten(results: dict) -> gt_lib.Predictions:
  """{video: [_Prediction]} -> Predictions, in file order, with no per-prediction Python code."""
  items = list(itertools.chain.from_iterable(results.values()))
  bounds = itertools.chain.from_iterable(map(operator.attrgetter('segment'), items))
  segment = np.fromiter(bounds, np.float64, 2 * len(items)).reshape(-1, 2)
  return gt_lib.predictions_from_columns(
    videos=results,
    counts=list(map(len, results.values())),
    labels=map(operator.attrgetter('label'), items),
    start=segment[:, 0],
    end=segment[:, 1],
    score=np.fromiter(map(operator.attrgetter('score'), items), np.float64, len(items)),
  )
