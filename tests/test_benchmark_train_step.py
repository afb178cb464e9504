"""benchmarks/train_step.py's analytic epoch plan: the micro mode's executed / true FLOPs.

On THUMOS14's 200 training lengths (the packaged annotations), micro-batches of one video in
geometric buckets (x1.2) execute at most 1.3x the true-length FLOPs over whole epochs, while
exact batches of 10 padded to 64-multiples execute about 4x; and the plan's micro-batches
are the input pipeline's (`plan_steps`) for the same epoch.
"""

import argparse

import pytest

from benchmarks import train_step as bench
from data_pipelines import input_pipeline

ANNOTATIONS = bench.REPO / 'data_pipelines' / 'annotations' / 'thumos14'
ARGS = argparse.Namespace(batch=10, micro=1, growth=1.2, bucket=64, seed=0)
FLOPS = dict(d_in=2048, d=2048, classes=20, label_slots=20, slots=5, reduction=4)


@pytest.fixture(scope='module')
def lengths():
  if not (ANNOTATIONS / 'duration.npy').is_file():
    pytest.skip(f'{ANNOTATIONS} not present')
  lengths, _ = bench.thumos_train_lengths(str(ANNOTATIONS))
  assert len(lengths) == 200 and lengths.sum() == 65215
  return lengths


def test_micro_executes_at_most_1_3x_the_true_flops(lengths):
  micro = bench.epoch_plan_stats('micro', lengths, ARGS, FLOPS, epochs=3)
  exact = bench.epoch_plan_stats('exact', lengths, ARGS, FLOPS, epochs=3)
  assert micro['true_tflop'] == exact['true_tflop']
  assert micro['executed_over_true'] <= 1.3
  assert exact['executed_over_true'] > 3.0
  assert micro['programs']['warm-up'] <= 22


def test_benchmark_plan_is_the_pipeline_plan(lengths):
  options = input_pipeline.BatchingOptions(
    global_batch_size=10, seed=0, mode='thumos', bucket_size=64, max_len=None, t_s=75,
    batching='micro', micro_batch_size=1, bucket_growth=1.2,
  )  # fmt: skip
  plan = input_pipeline.plan_steps(
    lengths, options, start_epoch=0, start_batch=0, host=input_pipeline.Host()
  )
  order = input_pipeline.sampling.epoch_order(0, 0, 200)
  for b in range(3):
    videos = order[b * 10 : (b + 1) * 10]
    want = [(t, [int(videos[p]) for p in pos]) for t, pos in bench.plan('micro', videos, lengths,
                                                                        ARGS)]  # fmt: skip
    got = [(t, [v for v, _, _ in rows]) for t, rows in next(plan)]
    assert got == want
