"""Default config sections shared by every experiment file in `configs/`.

Each function returns an `ml_collections.ConfigDict` holding the defaults (`docs/design.md`;
the decisions `A<n>`: the glossary in `docs/fidelity.md`); the experiment files override what
differs per dataset. Bare `§` numbers below are sections of `docs/design.md`.
"""

import ml_collections


def model_config(num_classes: int = 20, feature_dim: int = 2048) -> ml_collections.ConfigDict:
  """The `model` section: every architectural option of ISSF (docs/design.md §2)."""
  c = ml_collections.ConfigDict()
  c.num_classes = num_classes  # C; the head has C+1 centres, background last.
  c.feature_dim = feature_dim  # D_in of the I3D features.
  c.embed_dim = feature_dim  # D of the embedded space (RSKP keeps 2048 -> 2048).
  c.scale = 20.0  # Cosine-classifier scale s.
  c.dropout = 0.6  # Embedding dropout (the only dropout, A11).
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
