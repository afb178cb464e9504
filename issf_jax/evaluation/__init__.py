"""Detection and classification scoring: `official` (ActivityNet, seconds) and `rskp` protocols."""

from issf_jax.evaluation.classification import classification_map
from issf_jax.evaluation.ground_truth import FormatError, read_ambiguous_txt
from issf_jax.evaluation.official import ACTIVITYNET_TIOU, evaluate_official
from issf_jax.evaluation.table import format_results_table, range_averages

# The detection protocols a run can be scored with (config eval.protocol / eval.extra_protocols).
PROTOCOLS = ('rskp', 'official')

__all__ = [
  'ACTIVITYNET_TIOU',
  'PROTOCOLS',
  'RSKP_IOU',
  'FormatError',
  'classification_map',
  'evaluate_official',
  'evaluate_rskp',
  'format_results_table',
  'range_averages',
  'read_ambiguous_txt',
]


def __getattr__(name):
  # The rskp protocol (and through it proposals and ml_collections) is imported on first use, so
  # that `issf-eval score` starts without it.
  if name in ('RSKP_IOU', 'evaluate_rskp'):
    from issf_jax.evaluation import rskp

    return getattr(rskp, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
