r"""The base config of every experiment, whole, and the config arguments (docs/design.md §8).

An experiment file (`configs/thumos14.py`, `activitynet13.py`, `synthetic.py`) is

  def get_config(arg=None):
    arg = common.parse_arg(arg)  # the arguments below, checked
    config = common.base_config(dataset=..., num_classes=..., ...)  # every section, defaults
    config.model.sigma = ...  # what differs for the dataset
    common.apply_ablations(config, arg)  # the recipe, then the fields the arguments name
    return config

and `issf-train --config FILE[:ARGS] [--config.a.b=v ...] --show_config` prints the result.
`base_config` builds the sections in this order: dataset, data, model, memory, loss, optim,
train, eval (with eval.proposals); the model, memory, loss, optim and proposals sections come
from the functions after it (tests and benchmarks use them alone). The recipes
(`recipe=authors | spec_v1`) set whole groups of model and memory fields: issf_jax/recipes.py.
The decisions `A<n>` are stated in the glossary of docs/fidelity.md; bare `§` numbers are
sections of docs/design.md.

Ablations are config ARGUMENTS, not copies of a file:
  --config configs/thumos14.py:saliency=l2,brm=add,update=direct,modules=base_brm
Arguments (paper tables):
  saliency  Table 3: l1 (default) | l2 | cosine | random | classification
  brm       Table 5: weighted (default) | self | no_salient | no_non_salient | add | temporal_only
  update    Table 6: ours (default) | direct | momentum
  modules   Table 4: full (default, Base+BRM+DEM) | base_brm | base
  mode      official (default) | paper  (saliency mode, A1)
  memory    sequential (default) | batched
  recipe    authors (default: the authors' released code) | spec_v1 (issf_jax/recipes.py)
  memory_class_index  own (default: a video's own classes) | released (class 0, the bug)
  ties      default | index | torch: equal values (saliency top-k, memory merge) in index order
            or in the authors' torch CPU order (emulated on the host, only when a tie occurs);
            default: index, but the merge in torch's order with memory_class_index=released
  dem       paper (default: Eq. 9) | residual | gated | background | all_classes: DEM reads
            beyond the paper (docs/fidelity.md, section "DEM variants beyond the paper");
            `paper` adds nothing to the config
Under `recipe=authors`, `update=ours` selects the authors' memory update (`merge_blend`).
"""

from __future__ import annotations

import ml_collections

from issf_common import errors
from issf_jax import recipes


def base_config(
  *, dataset: str, num_classes: int, feature_dim: int, lr: float, num_epochs: int, batch_size: int
) -> ml_collections.ConfigDict:
  """Every section with its defaults; the experiment files override the dataset-specific values."""
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
  # micro-batches of micro_batch_size videos, each padded to a length bucket of its own longest
  # video, summed into the same optimizer step (memory.mode 'sequential'). The buckets: with
  # micro_buckets N > 0, the N lengths that pad the training set least (one compiled program
  # each; 16 pad THUMOS14's training videos by 9 % of the FLOPs, where the 22 geometric edges
  # of micro_buckets = 0, x bucket_growth, pad 15 %).
  # 'auto', decided when the trainer starts and recorded in the run's config.json: 'micro' on
  # the CPU (1.6-1.9x faster there) where it can serve the config (data.mode 'thumos', memory
  # sequential), else 'exact' (GPU/TPU); a resumed run keeps the mode it started with.
  config.data.batching = 'auto'  # 'auto' | 'exact' | 'micro'
  config.data.micro_batch_size = 0  # 0: the mesh's device count (one video per device)
  config.data.micro_buckets = 16
  config.data.bucket_growth = 1.2  # (micro_buckets = 0)
  # Training features kept resident, batches gathered from them, not read through tf.data
  # (data_pipelines/resident.py; the same batches bit for bit): 'auto' = on where the set takes
  # at most a quarter of the memory that holds it (the device's; on CPU the host's, where it
  # made THUMOS14's epochs about 12 % faster on 2 cores).
  config.data.resident = 'auto'  # 'auto' | 'on' | 'off'

  config.model = model_config(num_classes=num_classes, feature_dim=feature_dim)
  config.memory = memory_config()
  config.memory.max_labels_per_video = 0  # 0: C label slots (exact for any label set)
  config.loss = loss_config()
  config.optim = optim_config(lr)

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
  # A tuple, so that --config.eval.tiou_thresholds='(0.3, 0.5, 0.7)' can override it.
  config.eval.tiou_thresholds = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
  config.eval.proposals = proposal_config(dataset)
  return config


def model_config(num_classes: int = 20, feature_dim: int = 2048) -> ml_collections.ConfigDict:
  """The `model` section: every architectural option of ISSF (docs/design.md §2)."""
  c = ml_collections.ConfigDict()
  c.num_classes = num_classes  # C; the head has C+1 centres, background last.
  c.feature_dim = feature_dim  # D_in of the I3D features.
  c.embed_dim = feature_dim  # D of the embedded space (RSKP keeps 2048 -> 2048).
  c.scale = 20.0  # Cosine-classifier scale s.
  c.dropout = 0.6  # Embedding dropout (the only dropout, A11).
  # 'bfloat16': the embedding, channel-MLP and temporal-attention products on bfloat16 operands
  # with float32 accumulation (issf_jax/model/precision.py; about 4x the matmul rate on a CPU
  # with AMX-BF16). Changes the numbers; docs/results.md "Matmul precision" measures it.
  c.matmul_dtype = 'float32'  # 'float32' | 'bfloat16'
  # Saliency inference (Eq. 1-3, §2.2, A1/A2, Table 3).
  c.saliency_mode = 'official'  # 'official' | 'paper'
  c.saliency_distance = 'l1'  # 'l1' | 'l2' | 'cosine'
  c.saliency_strategy = 'distance'  # 'distance' | 'random' | 'classification'
  c.saliency_ratio = 0.5  # p: K from each video's true length.
  c.saliency_input = 'embedded'  # 'embedded' | 'raw'
  # k = max(int(p T) - 1, saliency_min_selected) in `official` mode: 1 guards short videos
  # (spec A1); the authors' code has no guard (0: a video with T < 4 has no salient snippet).
  c.saliency_min_selected = 1
  # Which of equal tau at the k-th place are salient: 'index' (the lower index; jittable) or
  # 'torch' (as the authors' torch.topk picks them; emulated on the host when a tie occurs).
  c.saliency_tie_order = 'index'
  # Boundary refinement module (Eq. 4-6, §2.3, Table 5).
  c.use_brm = True
  c.brm_reduction = 4  # r
  c.brm_variant = 'weighted'  # self | no_salient | no_non_salient | add | weighted | temporal_only
  c.sigma = 0.88  # weight of the salient term in Eq. 6
  c.attn_logits = 'dot'  # 'dot' | 'dot_sqrt_d' | 'cosine5'  (Eq. 5 and Eq. 9, A3)
  c.brm_mlp_bias = True  # the channel-unit MLPs theta_a/theta_b have biases (A18; authors: no)
  # An empty salient or non-salient set: 'renormalize' drops its term and gives the other
  # weight 1 (A4); 'zero' keeps the weights and the empty term is zero (the authors' code).
  c.brm_empty_set = 'renormalize'
  # Discrimination enhancement module (Eq. 9).
  c.use_dem = True
  # Pseudo-label T^p = w_brm T~ + w_dem T^ (A15: a plain sum; the authors' code: 0.8 / 0.2).
  c.pseudo_label_brm_weight = 1.0
  c.pseudo_label_dem_weight = 1.0
  # Inference fusion (§2.6, A17).
  c.fusion = 'base_brm'  # 'base_brm' (0.6 base + 0.4 BRM) | 'base'
  c.fusion_base_weight = 0.6
  return c


def memory_config() -> ml_collections.ConfigDict:
  """The `memory` section: DEM memory bank (§4.2, Table 6)."""
  c = ml_collections.ConfigDict()
  c.slots = 5  # N per class (A5; the authors' code: 9).
  c.eta0 = 0.1  # eta = eta0 * ln(exp(e/E) + 1) (Eq. 8, A6), modes `ours`/`momentum`.
  # 'ours' (spec: rank-aligned eta blend of the top-N candidates) | 'direct' | 'momentum' |
  # 'merge_blend' (the authors' code: a score-sorted merge of row and candidates, then from
  # epoch merge_until_epoch + 1 on, row = m row + (1 - m) merged, m = momentum_scale ln(...)).
  c.update_mode = 'ours'
  c.merge_until_epoch = 85  # the authors' `moment_up` (0-based epoch; merge_blend only)
  c.momentum_scale = 0.5  # m = momentum_scale * ln(exp(e/E) + 1) (merge_blend only)
  # The DEM read attends over every slot of the read rows, filled or not (the authors' code
  # reads the zero-initialised slots too) or over the filled slots only.
  c.read_empty_slots = False
  # Which memory row a video reads and updates: 'own' (its ground-truth classes, as the paper
  # says) or 'released' (the released code's bug: row 0, once per label the video has).
  c.class_index = 'own'
  # merge_blend: equal scores in the merge go 'index' (the row's slot first; jittable) or
  # 'torch' (as the authors' unstable torch.sort orders them, over every salient snippet,
  # on the host: only for reproducing the released run exactly; see issf_jax/torch_sort.py).
  c.merge_tie_order = 'index'
  c.mode = 'sequential'  # 'sequential' (RSKP order) | 'batched'
  return c


def loss_config() -> ml_collections.ConfigDict:
  """The `loss` section: weights of the full objective (§2.5)."""
  c = ml_collections.ConfigDict()
  c.theta = 0.2  # weight of L_MIL (RSKP lambda_b).
  c.lambda_att = 0.1  # weight of AttLoss (RSKP lambda_a).
  c.att_divisor = 8.0  # k = max(floor(T / 8), 1)
  c.kd_temperature = 0.2
  c.lambda_s_before = 1.0  # KD weight before memory init
  c.lambda_s_after = 0.5  # and after (A16)
  c.brm_cls_weight = 1.0  # L_cls weight of the BRM branch (A8)
  c.dem_cls_weight = 0.5  # and of the DEM branch
  return c


def optim_config(lr: float) -> ml_collections.ConfigDict:
  """The `optim` section: Adam with coupled L2 on summed gradients (§4.4)."""
  c = ml_collections.ConfigDict()
  c.lr = lr
  c.weight_decay = 5e-4
  c.b1 = 0.9
  c.b2 = 0.99
  c.eps = 1e-8
  c.grad_reduction = 'sum'  # 'sum' over the global batch (RSKP) | 'mean'
  return c


def proposal_config(dataset: str) -> ml_collections.ConfigDict:
  """The `proposals` config section for 'thumos14' or 'activitynet' (docs/design.md §7.2, §7.3)."""
  name = dataset.lower().replace('-', '').replace('_', '')
  if name.startswith('thumos'):
    is_anet = False
  elif name.startswith('activitynet') or name.startswith('anet'):
    is_anet = True
  else:
    raise ValueError(f'unknown dataset {dataset!r}: expected thumos14 or activitynet')
  c = ml_collections.ConfigDict()
  # CAS thresholds np.arange(start, stop, step): RSKP's 20 values 0.001 ... 0.039. For ActivityNet
  # (C = 200, smaller softmax magnitudes) sweep the range: `issf-eval --sweep_scales`.
  c.thresholds_start = 0.001
  c.thresholds_stop = 0.04
  c.thresholds_step = 0.002
  c.min_length = 2  # Runs shorter than this (in map snippets) are dropped.
  c.class_threshold = 0.1  # Video score gate.
  c.top1_fallback = is_anet  # ASM-Loc: ActivityNet is almost always single-label.
  c.nms = 'iou' if is_anet else 'rskp'  # 'rskp' | 'iou' | 'none'
  c.nms_threshold = 0.9 if is_anet else 0.5
  # Linear upsampling of the CAS before proposals (ACM-Net/ASM-Loc use 20 on ActivityNet). Kept at
  # 1 for both: the RSKP protocol needs the snippet grid, and no source fixes the ANet value.
  c.upsample = 1
  c.fps = 25.0
  c.stride = 16
  return c


# ---- The config arguments (module docstring) ---------------------------------------------

_ARG_DEFAULTS = dict(
  saliency='l1',
  brm='weighted',
  update='ours',
  modules='full',
  mode='official',
  memory='sequential',
  recipe='authors',
  memory_class_index='own',
  ties='default',
  dem='paper',
)
_CHOICES = dict(
  saliency=('l1', 'l2', 'cosine', 'random', 'classification'),
  brm=('weighted', 'self', 'no_salient', 'no_non_salient', 'add', 'temporal_only'),
  update=('ours', 'direct', 'momentum'),
  modules=('full', 'base_brm', 'base'),
  mode=('official', 'paper'),
  memory=('sequential', 'batched'),
  recipe=recipes.RECIPES,
  memory_class_index=recipes.MEMORY_CLASS_INDEX,
  ties=recipes.TIE_ORDERS,
  dem=recipes.DEM_READS,
)


def parse_arg(arg: str | None, **extra_defaults) -> ml_collections.ConfigDict:
  """'a=1,b=x' -> ConfigDict over the ablation defaults; unknown keys or values are errors."""
  defaults = dict(_ARG_DEFAULTS, **extra_defaults)
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  seen = set()
  for item in arg.split(','):
    if '=' not in item:
      raise errors.ConfigError(f'Config argument {item!r} is not key=value (in {arg!r}).')
    key, value = item.split('=', 1)
    if key in seen:  # the last one would win silently
      raise errors.ConfigError(f'Config argument {key} is given twice (in {arg!r}).')
    seen.add(key)
    if key not in defaults:
      raise errors.ConfigError(f'Unknown config argument {key!r}; known: {sorted(defaults)}.')
    if key in _CHOICES and value not in _CHOICES[key]:
      raise errors.ConfigError(f'Config argument {key}={value!r}; choose from {_CHOICES[key]}.')
    default = defaults[key]
    out[key] = type(default)(value) if not isinstance(default, str) else value
  return out


def apply_ablations(config: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> None:
  """Sets the recipe's fields, then the model/memory fields that the ablation arguments name."""
  recipes.apply_recipe(config, arg.recipe, arg.memory_class_index, arg.ties)
  m = config.model
  if arg.saliency in ('random', 'classification'):
    m.saliency_strategy = arg.saliency
  else:
    m.saliency_strategy, m.saliency_distance = 'distance', arg.saliency
  m.saliency_mode = arg.mode
  m.brm_variant = arg.brm
  update = arg['update']
  if update == 'ours' and arg.recipe == 'authors':
    update = 'merge_blend'
  config.memory.update_mode = update
  config.memory.mode = arg.memory
  if arg.modules == 'base':
    m.use_brm, m.use_dem, m.fusion = False, False, 'base'
  elif arg.modules == 'base_brm':
    m.use_brm, m.use_dem = True, False
  if not m.use_dem:
    config.train.memory_init_epoch = -1
  ablation = arg.to_dict()
  if ablation.get('ties') == 'default':  # the recipe's choice; no trace, as for `dem` below
    ablation.pop('ties')
  # The faithful read leaves no trace, so a config without the argument is unchanged; nor does
  # a read without a DEM (Base, Base+BRM: the same run whatever `dem=`).
  if ablation.pop('dem', 'paper') != 'paper':
    ablation['dem'] = arg.dem
    if m.use_dem:
      m.dem_read = arg.dem
  config.ablation = ablation
