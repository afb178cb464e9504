"""The tf.data pipeline: buckets and masks, epoch order, multi-host slices, resume, T_s sampling."""

import itertools

import numpy as np
import pytest

from data_pipelines import input_pipeline, prepare, sampling, synthetic, wtalc

BUCKET = 16


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """Tiny synthetic shards (24 train / 16 test videos, D = 64) and the source features."""
  src = synthetic.generate(str(tmp_path_factory.mktemp('src')), scale='tiny', seed=5)
  out = str(tmp_path_factory.mktemp('shards'))
  prepare.convert('wtalc', src, out, videos_per_shard=5)
  ds = wtalc.read_wtalc(src)
  feats = {}
  for subset in ('train', 'test'):
    rows = [i for i, v in enumerate(ds.videos) if v.subset == subset]
    feats[subset] = [ds.load_features(i) for i in rows]
  labels = {}
  for subset in ('train', 'test'):
    labels[subset] = [ds.multi_hot(v) for v in ds.videos if v.subset == subset]
  return out, feats, labels


@pytest.fixture(scope='module')
def thumos_run(data):
  """12 batches (two epochs) of the default THUMOS-mode iterator, and the iterator."""
  return _train(data[0], 12)


@pytest.fixture(scope='module')
def anet_run(data):
  return _train(data[0], 11, mode='activitynet', t_s=12)


def _train(out, n, *, start_epoch=0, start_batch=0, host=input_pipeline.Host(), **options):
  """The first n batches of an iterator of BatchingOptions(defaults | options)."""
  options = {'global_batch_size': 4, 'seed': 7, 'mode': 'thumos', 'bucket_size': BUCKET} | options
  it = input_pipeline.create_train_iterator(
    out, input_pipeline.BatchingOptions(**options), start_epoch=start_epoch,
    start_batch=start_batch, host=host,
  )  # fmt: skip
  return it, [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_thumos_batches_bucketing_and_masks(data, thumos_run):
  _, feats, labels = data
  it, batches = thumos_run
  assert it.steps_per_epoch == 6
  for b in batches:
    n, t, d = b['features'].shape
    assert (n, d) == (4, 64) and b['features'].dtype == np.float32 and b['mask'].dtype == bool
    assert b['labels'].shape == (4, 20) and b['video_index'].dtype == np.int32
    assert t % BUCKET == 0 and t == sampling.bucket_length(b['length'].max(), BUCKET)
    np.testing.assert_array_equal(b['mask'].sum(1), b['length'])
    for row in range(n):
      v, length = b['video_index'][row], b['length'][row]
      assert length == len(feats['train'][v])
      assert b['mask'][row, :length].all() and not b['mask'][row, length:].any()
      np.testing.assert_array_equal(b['features'][row, :length], feats['train'][v])
      assert not b['features'][row, length:].any()  # Padding is zero.
      np.testing.assert_array_equal(b['labels'][row], labels['train'][v])
  assert it.num_distinct_shapes == len({b['features'].shape for b in batches})
  assert it.state() == {'epoch': 2, 'batch': 0}


def test_epoch_order_is_a_seeded_permutation(thumos_run):
  _, batches = thumos_run
  epochs = [np.concatenate([b['video_index'] for b in batches[e * 6 : e * 6 + 6]]) for e in (0, 1)]
  for e, order in enumerate(epochs):
    assert len(set(order)) == 24  # 24 videos / 4 = 6 steps: nothing dropped here.
    np.testing.assert_array_equal(order, sampling.epoch_order(7, e, 24))
  assert not np.array_equal(epochs[0], epochs[1])  # 12 batches: the iterator runs on (infinite).
  assert not np.array_equal(sampling.epoch_order(8, 0, 24), epochs[0])


def test_drop_remainder(data):
  out, _, _ = data
  it, batches = _train(out, 2, global_batch_size=10)
  assert it.steps_per_epoch == 2  # 24 // 10; the last 4 of each epoch's permutation are dropped.
  seen = np.concatenate([b['video_index'] for b in batches])
  np.testing.assert_array_equal(seen, sampling.epoch_order(7, 0, 24)[:20])
  assert it.state() == {'epoch': 1, 'batch': 0}


@pytest.mark.parametrize('mode', ['thumos', 'activitynet'])
def test_two_hosts_concatenate_to_one(data, thumos_run, anet_run, mode):
  out, _, _ = data
  kwargs = {'mode': mode, 't_s': 12}
  single = (thumos_run if mode == 'thumos' else anet_run)[1][:7]
  _, host0 = _train(out, 7, host=input_pipeline.Host(0, 2), **kwargs)
  _, host1 = _train(out, 7, host=input_pipeline.Host(1, 2), **kwargs)
  joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(host0, host1, strict=True)]
  _assert_batches_equal(joined, single)
  assert host0[0]['features'].shape[0] == 2


@pytest.mark.parametrize('mode, split', [('thumos', 4), ('activitynet', 8)])
def test_resume_is_bitwise(data, thumos_run, anet_run, mode, split):
  out, _, _ = data
  full = (thumos_run if mode == 'thumos' else anet_run)[1][:11]
  # state() after `split` batches is (split // 6, split % 6): checked at the end of other tests.
  state = {'epoch': split // 6, 'batch': split % 6}
  _, resumed = _train(
    out, 11 - split, mode=mode, t_s=12, start_epoch=state['epoch'], start_batch=state['batch']
  )
  _assert_batches_equal(resumed, full[split:])
  assert anet_run[0].state() == {'epoch': 1, 'batch': 5}


def test_max_len_crops_a_window(data):
  out, feats, _ = data
  _, batches = _train(out, 6, max_len=20)
  for b in batches:
    assert b['features'].shape[1] <= 32 and b['length'].max() <= 20
    for row, v in enumerate(b['video_index']):
      x, n = feats['train'][v], b['length'][row]
      assert n == min(len(x), 20)
      window = b['features'][row, :n]
      starts = [s for s in range(len(x) - n + 1) if np.array_equal(x[s : s + n], window)]
      assert starts  # A contiguous window of the video.


def test_activitynet_training_sampling(data, anet_run):
  _, feats, _ = data
  seed, t_s = 7, 12
  _, batches = anet_run
  for b in batches[:6]:
    assert b['features'].shape == (4, t_s, 64) and b['mask'].all()
    assert (b['length'] == t_s).all()
    for row, v in enumerate(b['video_index']):
      x = feats['train'][v]
      idx = sampling.random_bin_indices(len(x), t_s, sampling.video_rng(seed, 0, int(v)))
      np.testing.assert_array_equal(b['features'][row], x[idx])


def test_sampling_functions():
  rng = np.random.default_rng(0)
  for t in (30, 75, 76, 200, 1000):
    idx = sampling.random_bin_indices(t, 75, rng)
    assert idx.shape == (75,) and (np.diff(idx) >= 0).all() and idx.max() < t
    if t > 75:
      lo, hi = np.arange(75) * t // 75, np.arange(1, 76) * t // 75
      assert ((idx >= lo) & (idx < hi)).all()  # One index per bin.
  np.testing.assert_array_equal(sampling.random_bin_indices(75, 75, rng), np.arange(75))
  np.testing.assert_array_equal(sampling.uniform_indices(50, 75), np.arange(50))
  np.testing.assert_array_equal(sampling.uniform_indices(150, 75), np.arange(75) * 2)
  np.testing.assert_array_equal(sampling.uniform_indices(100, 75)[:5], [0, 1, 2, 4, 5])
  np.testing.assert_array_equal(sampling.uniform_indices(1, 4), [0, 0, 0, 0])
  assert sampling.bucket_length(1, 64) == 64 and sampling.bucket_length(65, 64) == 128
  np.testing.assert_array_equal(sampling.epoch_order(0, 3, 10), sampling.epoch_order(0, 3, 10))


def test_eval_iterator_thumos_pads_the_last_batch(data):
  out, feats, labels = data
  batches = list(
    input_pipeline.create_eval_iterator(
      out, input_pipeline.EvalOptions(6, 'thumos', bucket_size=BUCKET), host=input_pipeline.Host()
    )
  )
  assert len(batches) == 3 and 'num_snippets_orig' not in batches[0]
  order = np.concatenate([b['video_index'] for b in batches])
  np.testing.assert_array_equal(order, list(range(16)) + [-1, -1])
  for b in batches:
    assert b['features'].shape[1] % BUCKET == 0
    for row, v in enumerate(b['video_index']):
      if v < 0:
        assert not b['valid'][row] and not b['mask'][row].any() and b['length'][row] == 0
        assert not b['features'][row].any() and not b['labels'][row].any()
        continue
      x = feats['test'][v]
      assert b['valid'][row] and b['length'][row] == len(x)
      np.testing.assert_array_equal(b['features'][row, : len(x)], x)
      np.testing.assert_array_equal(b['labels'][row], labels['test'][v])


def test_eval_iterator_activitynet_and_hosts(data):
  out, feats, _ = data
  make = lambda p, n: list(
    input_pipeline.create_eval_iterator(
      out, input_pipeline.EvalOptions(6, 'activitynet', t_s=20), host=input_pipeline.Host(p, n)
    )
  )
  single = make(0, 1)
  for b in single:
    assert b['features'].shape == (6, 20, 64)
    for row, v in enumerate(b['video_index']):
      if v < 0:
        assert b['num_snippets_orig'][row] == 0
        continue
      x = feats['test'][v]
      idx = sampling.uniform_indices(len(x), 20)
      assert b['num_snippets_orig'][row] == len(x) and b['length'][row] == len(idx)
      np.testing.assert_array_equal(b['features'][row, : len(idx)], x[idx])
  joined = [
    {k: np.concatenate([a[k], c[k]]) for k in a}
    for a, c in zip(make(0, 2), make(1, 2), strict=True)
  ]
  _assert_batches_equal(joined, single)


def test_bad_arguments(data):
  out, _, _ = data
  with pytest.raises(ValueError, match='divisible'):
    _train(out, 0, global_batch_size=5, host=input_pipeline.Host(0, 2))
  with pytest.raises(ValueError, match='mode'):
    _train(out, 0, mode='charades')
  with pytest.raises(ValueError, match='global_batch_size'):
    _train(out, 0, global_batch_size=64)


def test_close_stops_and_untracks(data):
  out, _, _ = data
  it, _ = _train(out, 1)
  ev = input_pipeline.create_eval_iterator(
    out, input_pipeline.EvalOptions(8, 'thumos'), host=input_pipeline.Host()
  )
  assert it in input_pipeline._OPEN and ev in input_pipeline._OPEN
  it.close()
  ev.close()
  assert it not in input_pipeline._OPEN and ev not in input_pipeline._OPEN
  with pytest.raises(StopIteration):
    next(it)
  assert it.state() == {'epoch': 0, 'batch': 1}


def test_geometric_buckets():
  edges = sorted({sampling.geometric_bucket_length(t, 1.2) for t in range(1, 2203)})
  # 16, then x1.2 rounded up to multiples of 16 (at least +16): hand-computed.
  assert edges == [16, 32, 48, 64, 80, 96, 128, 160, 192, 240, 288, 352, 432, 528, 640, 768, 928,
                   1120, 1344, 1616, 1952, 2352]  # fmt: skip
  assert sampling.geometric_bucket_length(16, 1.2) == 16
  assert sampling.geometric_bucket_length(17, 1.2) == 32
  assert sampling.geometric_bucket_length(5, 1.5, multiple=4) == 8
  with pytest.raises(ValueError):
    sampling.geometric_bucket_length(5, 1.0)


def test_fitted_buckets_hand_computed():
  # Candidates 16, 32, 112 (lengths rounded up to 16). Two edges: {32, 112} pads 10 and 20 to
  # 32 and 100, 110 to 112; {16, 112} would pad 20 to 112. Enough edges: every candidate.
  assert sampling.fitted_bucket_edges([10, 20, 100, 110], 2) == (32, 112)
  assert sampling.fitted_bucket_edges([110, 10, 100, 20], 5) == (16, 32, 112)
  assert sampling.fitted_bucket_edges([10, 20, 100, 110], 1) == (112,)
  assert sampling.fitted_bucket_length(100, (32, 112)) == 112
  assert sampling.fitted_bucket_length(32, (32, 112)) == 32
  with pytest.raises(ValueError, match='above the longest'):
    sampling.fitted_bucket_length(113, (32, 112))
  with pytest.raises(ValueError):
    sampling.fitted_bucket_edges([10, 20], 0)


def test_fitted_buckets_are_the_least_padding_against_brute_force():
  rng = np.random.default_rng(0)

  def padding(lengths, edges):
    cost = lambda t: t + t * t / sampling.FITTED_QUADRATIC_SCALE  # noqa: E731
    return sum(cost(sampling.fitted_bucket_length(t, edges)) - cost(t) for t in lengths)

  for _ in range(60):
    lengths = rng.integers(1, 400, size=int(rng.integers(1, 10)))
    count = int(rng.integers(1, 5))
    candidates = np.unique(-(-lengths // 16) * 16)
    best = min(
      padding(lengths, tuple(sorted(sub)) + (int(candidates[-1]),))
      for k in range(min(count, len(candidates)))
      for sub in itertools.combinations(candidates[:-1].tolist(), k)
    )
    edges = sampling.fitted_bucket_edges(lengths, count)
    assert len(edges) <= count and edges[-1] == candidates[-1]
    assert padding(lengths, edges) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_micro_batches_pad_to_the_fitted_buckets():
  lengths = np.array([10, 20, 100, 110, 300, 310, 40])
  options = input_pipeline.BatchingOptions(
    global_batch_size=7, seed=0, mode='thumos', batching='micro', micro_buckets=3
  )
  edges = sampling.fitted_bucket_edges(lengths, 3)
  assert input_pipeline.micro_lengths(lengths, options) == list(edges)
  step = next(input_pipeline.plan_steps(
    lengths, options, start_epoch=0, start_batch=0, host=input_pipeline.Host(0, 1)))  # fmt: skip
  for t_pad, rows in step:
    ((video, _, _),) = rows
    assert t_pad == sampling.fitted_bucket_length(lengths[video], edges)


@pytest.mark.parametrize('size', [1, 2])
def test_micro_batches_regroup_the_exact_batches(data, thumos_run, size):
  _, feats, _ = data
  it, micro = _train(data[0], 12, batching='micro', micro_batch_size=size)
  assert it.state() == thumos_run[0].state() == {'epoch': 2, 'batch': 0}
  for exact, groups in zip(thumos_run[1], micro, strict=True):
    assert len(groups) == 4 // size
    positions = np.concatenate([g['position'] for g in groups])
    assert sorted(positions) == [0, 1, 2, 3]  # every video of the batch once
    if size == 1:
      assert list(positions) == [0, 1, 2, 3]  # batch order kept
    for g in groups:
      lengths = g['length']
      assert g['features'].shape[1] == sampling.geometric_bucket_length(lengths.max(), 1.2)
      np.testing.assert_array_equal(g['mask'].sum(1), lengths)
      for row, pos in enumerate(g['position']):
        v, n = g['video_index'][row], lengths[row]
        assert exact['video_index'][pos] == v and exact['length'][pos] == n
        np.testing.assert_array_equal(g['features'][row, :n], feats['train'][v])
        np.testing.assert_array_equal(g['features'][row, n:], 0)
        np.testing.assert_array_equal(g['labels'][row], exact['labels'][pos])
    if size == 2:  # sorted by length: the short pair first
      assert groups[0]['length'].max() <= groups[1]['length'].min()
  if size == 2:  # two hosts: one row of every pair each; together the one-host groups
    _, h0 = _train(data[0], 3, batching='micro', micro_batch_size=2, host=input_pipeline.Host(0, 2))
    _, h1 = _train(data[0], 3, batching='micro', micro_batch_size=2, host=input_pipeline.Host(1, 2))
    for one, a, b in zip(micro[:3], h0, h1, strict=True):
      joined = [{k: np.concatenate([x[k], y[k]]) for k in x} for x, y in zip(a, b, strict=True)]
      _assert_batches_equal(joined, one)
  # Resume in the middle of epoch 1.
  _, resumed = _train(data[0], 3, batching='micro', micro_batch_size=size, start_epoch=1,
                      start_batch=2)  # fmt: skip
  for a, b in zip(resumed, micro[8:11], strict=True):
    _assert_batches_equal(a, b)


def test_bad_micro_batch_size(data):
  with pytest.raises(ValueError, match='micro_batch_size'):
    _train(data[0], 1, batching='micro', micro_batch_size=3)
  with pytest.raises(ValueError, match='batching'):
    _train(data[0], 1, batching='sorted')
