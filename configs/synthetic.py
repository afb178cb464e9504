r"""ISSF on the embedded synthetic THUMOS-shaped benchmark (the default; no download).

The generator (`data_pipelines/synthetic.py`, scale `small`) writes the W-TALC format,
`issf-prepare` shards it, and this config trains ISSF on it with THUMOS's recipe scaled
down: D = 256 features (the scale's D: `scale=tiny` 64, `scale=full` 2048), lr 1e-4,
30 epochs. The epoch-indexed events of the recipe scale with `train.num_epochs` E (lazily, so
an override moves them):
  recipe=authors (default): memory built at the end of epoch ceil(2E/180) - 1 = 0, a sorted
    merge until epoch round(85E/180) = 14, then the m-blend;
  recipe=spec_v1: memory built at the end of epoch floor(100E/180) = 16.

  make demo          # = python -m launch.demo --workdir runs/demo
or by hand:
  python -m launch.synthetic --scale small --out runs/synthetic/raw
  issf-prepare --format wtalc --src runs/synthetic/raw --out runs/synthetic/shards
  issf-train --config configs/synthetic.py --workdir runs/demo \
    --config.data.shards_dir=runs/synthetic/shards

Hardware and time: a few minutes on a 2-core CPU. Expected result: see docs/results.md
(Table 4 over seeds for both recipes: `issf-repro --table 4 --seeds 3`).
"""

from configs import common
from issf_common import errors


def get_config(arg=None):
  arg = common.parse_arg(arg, scale='small')
  from data_pipelines import synthetic  # numpy only; the scales of the generator

  if arg.scale not in synthetic.SCALES:
    raise errors.ConfigError(
      f'Config argument scale={arg.scale!r}; choose from {tuple(synthetic.SCALES)}.'
    )
  # The model's D is the scale's (tiny 64, small 256, full 2048), as the generator writes it.
  dim = synthetic.SCALES[arg.scale].feature_dim
  config = common.base_config(
    dataset='thumos14', num_classes=20, feature_dim=dim, lr=1e-4, num_epochs=30, batch_size=10
  )
  config.dataset = 'synthetic'
  config.data.synthetic_scale = arg.scale
  config.train.eval_every_epochs = 10
  config.train.checkpoint_every_epochs = 10
  config.train.log_every_steps = 50
  # The rest is THUMOS14's recipe, the base defaults (sigma 0.88, p 0.5, `rskp` protocol).
  common.apply_ablations(config, arg)
  return config
