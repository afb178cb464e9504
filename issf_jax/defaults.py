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
  # Boundary refinement module (Eq. 4-6, §2.3, Table 5).
  c.use_brm = True
  c.brm_reduction = 4  # r
  c.brm_variant = 'weighted'  # self | no_salient | no_non_salient | add | weighted | temporal_only
  c.sigma = 0.88  # weight of the salient term in Eq. 6
  c.attn_logits = 'dot'  # 'dot' | 'dot_sqrt_d' | 'cosine5'  (Eq. 5 and Eq. 9, A3)
  # Discrimination enhancement module (Eq. 9).
  c.use_dem = True
  # Inference fusion (§2.6, A17).
  c.fusion = 'base_brm'  # 'base_brm' (0.6 base + 0.4 BRM) | 'base'
  c.fusion_base_weight = 0.6
  return c


def memory_config() -> ml_collections.ConfigDict:
  """The `memory` section: DEM memory bank (§4.2, Table 6)."""
  c = ml_collections.ConfigDict()
  c.slots = 5  # N per class (A5).
  c.eta0 = 0.1  # eta = eta0 * ln(exp(e/E) + 1) (Eq. 8, A6).
  c.update_mode = 'ours'  # 'ours' | 'direct' | 'momentum'
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
