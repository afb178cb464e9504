"""ActivityNet end to end, and each place where ActivityNet differs from THUMOS.

The differences, each with a hand-computed case: proposals on the T_s map mapped back to seconds
(and a video shorter than T_s kept whole), classes chosen by video score >= 0.1 or the top 1, the
memory's label-slot cap, sampling of videos shorter than T_s, and p = 0.9 leaving the non-salient
set empty. Then the whole path as a user runs it at `tiny` scale: the generator's ACM-Net package
-> issf-prepare -> issf-train (periodic `official` evaluation at 0.5:0.05:0.95) -> issf-eval on
the best and latest checkpoints -> ActivityNet-JSON predictions scored by `issf-eval score` ->
issf-predict --plot on one video.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import activitynet13, common
from data_pipelines import sampling, synthetic
from issf_jax import inference, proposals
from issf_jax import memory as memory_lib
from issf_jax.model.refinement import BoundaryRefinement
from issf_jax.model.saliency import infer_saliency
from issf_jax.train import step as step_lib
from launch import prepare as prepare_cli
from tests.conftest import REPO_DIR, run_python, subprocess_env

ANET = common.proposal_config('activitynet13')
THUMOS = common.proposal_config('thumos14')
SNIPPET = 16 / 25


def _pred(cas_column, t_orig, scores=(0.05, 0.9, 0.02)):
  """A predicted video with C = 3: class 1 has the given CAS column, the others 0."""
  cas = np.zeros((len(cas_column), 4), np.float32)
  cas[:, 1] = cas_column
  return {'video_scores': np.array([*scores, 0.0], np.float32), 'cas': cas,
          'num_snippets_orig': t_orig}  # fmt: skip


def test_proposals_on_the_ts_map_are_mapped_back_to_seconds():
  # T = 150 snippets sampled to T_s = 75: each map index stands for 2 snippets = 1.28 s.
  column = np.zeros(75, np.float32)
  column[10:20] = 0.5
  dets = inference.video_detections(_pred(column, 150), ANET, t_s=75)
  # Every CAS threshold gives the run [10, 20); RSKP's proposal [10, 21) once after IoU NMS.
  # inner = mean(cas[10:21]) = 5 / 11, outer context cas[7:10] ++ cas[21:23] = 0.
  np.testing.assert_allclose(dets, [[1, 10 * 1.28, 21 * 1.28, 5 / 11]], rtol=1e-6)
  # A run reaching the map's end ends at the video's end (150 x 0.64 = 96 s), not past it.
  column[:] = 0
  column[60:] = 0.5
  dets = inference.video_detections(_pred(column, 150), ANET, t_s=75)
  np.testing.assert_allclose(dets[:, 1:3], [[60 * 1.28, 96.0]])
  # A video shorter than T_s is not resampled: its map has T = 40 rows of 0.64 s.
  short = np.zeros(40, np.float32)
  short[5:10] = 0.5
  dets = inference.video_detections(_pred(short, 40), ANET, t_s=75)
  np.testing.assert_allclose(dets[:, 1:3], [[5 * SNIPPET, 11 * SNIPPET]])


def test_classes_by_video_score_or_the_top_one():
  c = 3
  assert proposals.selected_classes(np.float32([0.05, 0.9, 0.1, 0.99]), c, ANET).tolist() == [1, 2]
  low = np.float32([0.05, 0.09, 0.02, 0.99])  # background score (last) never read
  assert proposals.selected_classes(low, c, ANET).tolist() == [1]  # top-1 fallback
  assert proposals.selected_classes(low, c, THUMOS).tolist() == []  # THUMOS: none
  assert ANET.top1_fallback and ANET.nms == 'iou' and ANET.nms_threshold == 0.9
  # The config wires the ActivityNet rules and the official protocol at 0.5:0.05:0.95.
  config = activitynet13.get_config('scale=tiny')
  assert config.eval.proposals.top1_fallback and config.eval.protocol == 'official'
  assert config.eval.tiou_thresholds == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_scale_argument():
  full, default = activitynet13.get_config('scale=full'), activitynet13.get_config()
  assert full.to_dict() == default.to_dict() and default.model.feature_dim == 2048
  small = activitynet13.get_config('scale=small')
  m = small.model
  assert (m.feature_dim, m.embed_dim, m.num_classes) == (256, 256, 200)
  assert (small.train.num_epochs, small.train.batch_size, small.optim.lr) == (20, 32, 5e-4)
  # recipe=authors (default): the authors' 180-epoch events at E = 20 (docs/fidelity.md).
  assert small.train.memory_init_epoch == 0 and small.memory.merge_until_epoch == 9
  spec = activitynet13.get_config('scale=small,recipe=spec_v1')
  assert spec.train.memory_init_epoch == 10  # half-way, as epoch 50 of 100
  assert small.data.t_s == 75 and small.model.saliency_ratio == 0.9
  base = activitynet13.get_config('scale=small,modules=base')
  assert base.train.memory_init_epoch == -1 and not base.model.use_brm
  with pytest.raises(ValueError, match='scale'):
    activitynet13.get_config('scale=huge')


def test_memory_label_slot_cap():
  config = activitynet13.get_config('scale=tiny')
  assert step_lib.max_labels(config) == 4  # not C = 200
  labels = np.zeros((3, 200), np.float32)
  labels[0, [7, 150]] = 1  # two classes: the most any ActivityNet video has
  labels[1, 42] = 1
  slots = np.asarray(memory_lib.label_slots(jnp.asarray(labels), 4))
  np.testing.assert_array_equal(slots, [[7, 150, -1, -1], [42, -1, -1, -1], [-1, -1, -1, -1]])
  # The cap changes nothing when no video has more labels than slots: the memory after
  # the sequential updates is the same with L = 4 and with L = C.
  rng = np.random.default_rng(0)
  b, t, d, n = 3, 12, 8, 5
  feats = jnp.asarray(rng.random((b, t, d), np.float32))
  salient = jnp.asarray(rng.random((b, t)) < 0.7)
  probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(b, t, 201)), jnp.float32), -1)
  banks = []
  for cap in (4, 200):
    ids = memory_lib.label_slots(jnp.asarray(labels), cap)
    cf, cs, cv, _ = memory_lib.candidates(feats, salient, probs, ids, n)
    bank, _, _ = memory_lib.scan_updates(memory_lib.empty(200, n, d), cf, cs, cv, ids, 0.1, 'ours')
    banks.append(bank)
  for x, y in zip(jax.tree.leaves(banks[0]), jax.tree.leaves(banks[1]), strict=True):
    np.testing.assert_array_equal(x, y)
  filled = np.asarray(banks[0].filled)
  assert filled[[7, 150, 42]].sum() == 3 * n and filled.sum() == 3 * n
  # A video with more labels than slots is an error naming it, not a silent drop.
  labels[2, :5] = 1
  with pytest.raises(ValueError, match="video 'vid_c' has 5 labels .* keeps 4"):
    step_lib.check_label_cap(labels, np.arange(3), ['vid_a', 'vid_b', 'vid_c'], config)
  step_lib.check_label_cap(labels[:2], np.arange(2), ['vid_a', 'vid_b'], config)


def test_sampling_of_videos_shorter_than_ts():
  # Evaluation: T <= T_s keeps every snippet (padded, masked); T > T_s takes floor(k T / T_s);
  # T = 1 repeats its snippet T_s times (ACM-Net).
  np.testing.assert_array_equal(sampling.uniform_indices(40, 75), np.arange(40))
  np.testing.assert_array_equal(sampling.uniform_indices(150, 75), 2 * np.arange(75))
  np.testing.assert_array_equal(sampling.uniform_indices(1, 75), np.zeros(75))
  # Training: T < T_s draws T_s indices with replacement, sorted; T = T_s is the identity.
  idx = sampling.random_bin_indices(40, 75, np.random.default_rng(0))
  assert idx.shape == (75,) and (np.diff(idx) >= 0).all() and 0 <= idx.min() <= idx.max() < 40
  np.testing.assert_array_equal(sampling.random_bin_indices(75, 75, None), np.arange(75))
  # T > T_s: one index in each of the 75 bins [floor(i T / 75), floor((i + 1) T / 75)).
  idx = sampling.random_bin_indices(300, 75, np.random.default_rng(1))
  np.testing.assert_array_equal(idx // 4, np.arange(75))


def test_p09_leaves_the_non_salient_set_empty(small_params):
  """Official saliency at p = 0.9: K = max(floor(0.9 T) - 1, 1) picks plus their predecessors."""
  rng = np.random.default_rng(0)
  lengths = [1, 2, 3, 75]
  feats = jnp.asarray(np.abs(rng.normal(size=(4, 75, 64))).astype(np.float32))
  mask = jnp.asarray(np.arange(75)[None] < np.array(lengths)[:, None])
  salient = np.asarray(infer_saliency(feats, mask, ratio=0.9))
  counts = salient.sum(-1)
  # T = 1, 2: K = 1, the pick and its predecessor cover the video; T = 3: K = 1, two of three.
  assert counts[:3].tolist() == [1, 2, 2]
  assert 66 <= counts[3] <= 75  # K = 66 picks, each with its predecessor
  non_salient_empty = ~(np.asarray(mask) & ~salient).any(-1)
  assert non_salient_empty[:2].all() and not non_salient_empty[2]
  # With the non-salient set empty, Eq. 6 falls back to the salient term alone (weight 1, A4),
  # i.e. what the `no_non_salient` variant computes, and the gradients stay finite.
  params = small_params['brm']

  def refine(variant, x):
    brm = BoundaryRefinement(variant=variant, sigma=0.9)
    return brm.apply({'params': params}, x, mask, jnp.asarray(salient))

  weighted, alone = refine('weighted', feats), refine('no_non_salient', feats)
  for i in np.nonzero(non_salient_empty)[0]:
    np.testing.assert_allclose(weighted[i], alone[i], rtol=1e-6)
  grads = jax.grad(lambda x: jnp.sum(jnp.sin(refine('weighted', x))))(feats)
  assert np.isfinite(np.asarray(grads)).all()


# ---- The whole path at tiny scale ----------------------------------------------------------


@pytest.fixture(scope='module')
def anet_tiny_shards(tmp_path_factory):
  """The tiny ActivityNet benchmark in the ACM-Net layout, through `issf-prepare`."""
  root = tmp_path_factory.mktemp('anet_tiny_path')
  src = synthetic.generate(str(root / 'raw'), dataset='activitynet13', scale='tiny',
                           out_format='acmnet')  # fmt: skip
  argv = ['--format', 'acmnet', '--src', src, '--out', str(root / 'shards'),
          '--classes', 'activitynet13']  # fmt: skip
  assert prepare_cli.run(argv) == 0
  return root / 'raw', root / 'shards'


def _read(path):
  with open(path) as f:
    return json.load(f)


def test_tiny_path_end_to_end(anet_tiny_shards, tmp_path, jax_cache_dir):
  from issf_jax.train import run_dir
  from launch import evaluate, score

  raw, shards = anet_tiny_shards
  env = subprocess_env(jax_cache_dir)
  workdir = tmp_path / 'run'
  config_arg = f'{REPO_DIR / "configs" / "activitynet13.py"}:scale=tiny'
  run_python(['-m', 'launch.train', '--config', config_arg, '--workdir', workdir,
              f'--config.data.shards_dir={shards}'], env)  # fmt: skip
  manifest = _read(shards / 'manifest.json')
  assert manifest['num_classes'] == 200 and manifest['counts'] == {'train': 48, 'test': 24}

  # Periodic evaluation (epochs 2 and 4 of 6 steps) with the official protocol at 0.5:0.95.
  lines = [json.loads(x) for x in open(workdir / 'metrics.jsonl')]
  evals = {r['step']: r for r in lines if 'eval/average_mAP' in r}
  assert sorted(evals) == [12, 24]
  thresholds = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
  for r in evals.values():
    per_tiou = [r[f'eval/mAP@{t:g}'] for t in thresholds]
    assert r['eval/average_mAP'] == pytest.approx(np.mean(per_tiou))
    assert 0 <= r['eval/classification_mAP'] <= 1  # over the 12 classes present, not nan
  best_step = max(evals, key=lambda s: evals[s]['eval/average_mAP'])

  # ActivityNet-JSON predictions, in seconds inside each video, 200-class labels.
  predictions = _read(workdir / 'predictions' / 'step_24.json')
  gt = _read(shards / 'ground_truth.json')['database']
  test_ids = [v['video_id'] for v in manifest['videos']['test']]
  assert sorted(predictions['results']) == sorted(test_ids)
  names = set(manifest['classes'])
  for vid, dets in predictions['results'].items():
    for d in dets:
      assert d['label'] in names and 0 <= d['segment'][0] < d['segment'][1]
      assert d['segment'][1] <= gt[vid]['duration'] + 1e-6

  # issf-eval on the latest and the best checkpoint reproduce the trainer's evaluations.
  config = run_dir.load_config(str(workdir))
  for which, step in (('latest', 24), ('best', best_step)):
    result = evaluate.evaluate_checkpoint(config, str(workdir), which)
    assert result['checkpoint']['step'] == step
    assert result['average_mAP'] == pytest.approx(evals[step]['eval/average_mAP'], abs=1e-6)
    assert _read(workdir / 'eval' / f'step_{step}.json')['protocol'] == 'official'

  # `issf-eval score` on the predictions file: the official evaluator, same numbers.
  out = tmp_path / 'scored.json'
  argv = ['--predictions', str(workdir / 'predictions' / 'step_24.json'), '--ground_truth',
          str(shards / 'ground_truth.json'), '--subset', 'test', '--protocol', 'official',
          '--tiou', '0.5:0.95:0.05', '--output_json', str(out)]  # fmt: skip
  assert score.main(argv) == 0
  assert _read(out)['average_mAP'] == pytest.approx(evals[24]['eval/average_mAP'], abs=1e-6)

  # issf-predict --plot on one test video longer than T_s: the evaluator's detections.
  video = next(v for v in manifest['videos']['test'] if v['num_snippets'] > 75)['video_id']
  npy, plot, dets = raw / 'test' / f'{video}.npy', tmp_path / 'v.png', tmp_path / 'v.json'
  run_python(['-m', 'launch.predict', '--workdir', workdir, '--features', npy, '--plot', plot,
              '--output', dets, '--ground_truth', shards / 'ground_truth.json'], env)  # fmt: skip
  assert plot.stat().st_size > 10_000
  got = sorted((d['label'], *d['segment'], d['score']) for d in _read(dets)['detections'])
  want = sorted((d['label'], *d['segment'], d['score']) for d in predictions['results'][video])
  assert len(got) == len(want) > 0
  for g, w in zip(got, want, strict=True):
    assert g[0] == w[0] and g[1:] == pytest.approx(w[1:], abs=1e-4)
