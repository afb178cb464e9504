r"""ISSF on ActivityNet v1.3 with the paper's hyperparameters (Table 2; docs/design.md §8, A19).

100 epochs, lr 1e-4, batch 32 (real batches), sigma 0.9, p 0.9, r 4, theta 0.2,
lambda 0.1; T_s = 75 sampled snippets; the `official` ActivityNet protocol at tIoU
0.5:0.05:0.95. The default `recipe=authors` (see configs/thumos14.py) scales the authors'
180-epoch events to E = 100: memory built at the end of epoch ceil(2E/180) - 1 = 1, sorted
merge until epoch round(85E/180) = 47. `:recipe=spec_v1`: memory at the end of epoch 50.

  issf-prepare --format acmnet --src data/ActivityNet13 --out data/anet_shards
  issf-train --config configs/activitynet13.py --workdir runs/anet \
    --config.data.shards_dir=data/anet_shards

Hardware and time: ~28k steps of 32 x 75 snippets; about an hour on one GPU.
Expected result (paper, Table 2): average mAP 25.8 (0.5: 39.4, 0.75: 25.8, 0.95: 6.4).
"""

from issf_jax import config_lib, experiment


def get_config(arg=None):
  arg = config_lib.parse_arg(arg)
  config = experiment.base_config(
    dataset='activitynet13', num_classes=200, feature_dim=2048, lr=1e-4, num_epochs=100,
    batch_size=32,
  )  # fmt: skip
  config.data.mode = 'activitynet'
  config.data.t_s = 75
  config.data.eval_batch_size = 64
  config.model.sigma = 0.9
  config.model.saliency_ratio = 0.9
  config.model.brm_reduction = 4
  config.loss.theta = 0.2
  config.loss.lambda_att = 0.1
  config.memory.max_labels_per_video = 4  # ActivityNet videos carry 1-3 labels; C would be 200
  config.train.memory_init_epoch = 50  # spec_v1's (A7); recipe=authors replaces it
  config.train.eval_every_epochs = 10
  config.train.checkpoint_every_epochs = 10
  config.eval.protocol = 'official'
  config.eval.tiou_thresholds = [round(0.5 + 0.05 * i, 2) for i in range(10)]
  config_lib.apply_ablations(config, arg)
  return config
