"""The experiment config skeleton shared by `configs/*.py` (every section with its defaults)."""

from __future__ import annotations

import ml_collections

from issf_jax import defaults
from issf_jax.proposals import proposal_config


def base_config(
  *, dataset: str, num_classes: int, feature_dim: int, lr: float, num_epochs: int, batch_size: int
) -> ml_collections.ConfigDict:
  """All sections; experiment files override the dataset-specific values."""
  config = ml_collections.ConfigDict()
  config.dataset = dataset

  config.data = ml_collections.ConfigDict()
  config.data.shards_dir = ''  # output of `issf-prepare` (required)
  config.data.mode = 'thumos'  # 'thumos' (full length, buckets) | 'activitynet' (T_s sampling)
  config.data.bucket_size = 64
  config.data.max_len = 0  # 0: full length (RSKP trains on whole videos)
  config.data.t_s = 75
  config.data.eval_subset = 'test'
  config.data.eval_batch_size = 8
  # Training batches (docs/results.md, Training throughput): 'exact' pads each global batch to
  # its longest video (one program per bucket_size multiple); 'micro' runs the same batch as
  # micro-batches of micro_batch_size videos, each padded to a geometric bucket (x bucket_growth)
  # of its own longest video, summed into the same optimizer step (memory.mode 'sequential').
  config.data.batching = 'exact'  # 'exact' | 'micro'
  config.data.micro_batch_size = 0  # 0: the mesh's device count (one video per device)
  config.data.bucket_growth = 1.2
  # Training features kept on the devices, batches gathered there (data_pipelines/resident.py):
  # 'auto' = on for accelerators with room for the set, off on CPU.
  config.data.resident = 'auto'  # 'auto' | 'on' | 'off'

  config.model = defaults.model_config(num_classes=num_classes, feature_dim=feature_dim)
  config.memory = defaults.memory_config()
  config.memory.max_labels_per_video = 0  # 0: C label slots (exact for any label set)
  config.loss = defaults.loss_config()
  config.optim = defaults.optim_config(lr)

  config.train = ml_collections.ConfigDict()
  config.train.num_epochs = num_epochs
  config.train.batch_size = batch_size  # global batch of videos per optimizer step
  # The 0-based epoch at whose end M is built: spec A7's 100 of 180, scaled with num_epochs
  # (a lazy reference, so `--config.train.num_epochs` moves it). Recipes may replace it.
  config.train.memory_init_epoch = config.train.get_ref('num_epochs') * 100 // 180
  config.train.seed = 2  # RSKP's torch.manual_seed(2)
  config.train.num_devices = 0  # 0: every device
  config.train.log_every_steps = 20
  config.train.eval_every_epochs = 5  # RSKP's save_interval
  config.train.checkpoint_every_epochs = 5
  config.train.keep_last = 2
  config.train.best_metric = 'average_mAP'  # kept as the "best" checkpoint (on the eval split!)
  config.train.distributed = False  # jax.distributed.initialize() for multi-host pods
  config.train.max_steps = 0  # >0 stops early (tests, smoke runs)
  # jax_default_matmul_precision for the whole run: 'default' (the backend's: TF32 for float32
  # matmuls on recent NVIDIA GPUs, exact float32 on CPU), 'float32' or 'tensorfloat32'
  # (benchmarks/gpu_recipe.py measures what the choice changes).
  config.train.matmul_precision = 'default'

  config.eval = ml_collections.ConfigDict()
  config.eval.protocol = 'rskp'  # 'rskp' (RSKP's THUMOS14 evaluator) | 'official' (ActivityNet)
  # Also reported (tables, eval/step_N.json under 'extra', metrics as 'official/...'), e.g.
  # ('official',) on THUMOS14; the best checkpoint follows `protocol` only.
  config.eval.extra_protocols = ()
  config.eval.tiou_thresholds = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
  config.eval.proposals = proposal_config(dataset)
  return config
