"""The DEM memory bank (paper Eq. 7-9, `docs/design.md` §4.2, Table 6) as a pytree.

State: features [C, N, D], scores [C, N], filled [C, N] bool, initialized (scalar bool).
Pure functions act on it:
  * `candidates`:   the update candidates of a batch of videos (top-N salient snippets per
                    ground-truth class by the class probability), a function of params only;
  * `init_merge`:   initialisation, keeping each class's global top-N (order-independent);
  * `update`:       the update of one video (modes `ours`, `direct`, `momentum`, and the
                    authors' `merge_blend`);
  * `scan_updates`: the exact sequential updates of a global batch, with the rows each
                    video must read (the memory the videos before it left);
  * `read_rows`:    the rows of a video's ground-truth classes, for the DEM read.
Videos carry `L` label slots (class ids, -1 for none) instead of all C classes, so the
per-video buffers are [L, N, D]; L = C is exact for any label set.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp

from issf_jax import torch_sort
from issf_jax.recipes import UPDATE_MODES

# `merge_blend` with equal scores ordered as the authors' torch.sort does (torch_sort.py);
# its candidates are every salient snippet (`all_salient_candidates`), not the top N.
EXACT_MERGE = 'merge_blend_torch'


@flax.struct.dataclass
class MemoryBank:
  features: jax.Array  # [C, N, D]
  scores: jax.Array  # [C, N]
  filled: jax.Array  # [C, N] bool
  initialized: jax.Array  # [] bool: the init pass has run

  @property
  def num_classes(self) -> int:
    return self.features.shape[0]


def empty(num_classes: int, slots: int, dim: int) -> MemoryBank:
  return MemoryBank(
    features=jnp.zeros((num_classes, slots, dim), jnp.float32),
    scores=jnp.zeros((num_classes, slots), jnp.float32),
    filled=jnp.zeros((num_classes, slots), bool),
    initialized=jnp.zeros((), bool),
  )


def eta(epoch, total_epochs: int, eta0: float):
  """Eq. 8: eta = eta0 * ln(exp(e / E) + 1), e the 0-based epoch (A21).

  The authors' momentum m is the same curve with eta0 = `memory.momentum_scale` (0.5), but
  it weighs the OLD row (`merge_blend_update`); `schedules.memory_weight` picks which.
  """
  return eta0 * jnp.log(jnp.exp(jnp.asarray(epoch, jnp.float32) / total_epochs) + 1.0)


def label_slots(labels: jax.Array, max_labels: int) -> jax.Array:
  """[B, C] multi-hot -> [B, L] class ids in increasing order, -1 where there are fewer."""
  num_classes = labels.shape[-1]
  ids = jnp.arange(num_classes)
  # Stable order: positives first by class id, then negatives.
  keys = jnp.where(labels > 0, ids, num_classes + ids)
  order = jnp.argsort(keys, axis=-1, stable=True)[:, :max_labels]
  present = jnp.take_along_axis(labels, order, axis=-1) > 0
  return jnp.where(present, order, -1).astype(jnp.int32)


def candidates(feats, salient, probs, class_ids, slots: int, mode: str = 'ours'):
  """Update candidates: for each label slot, the top-N salient snippets by P[:, c].

  Args:
    feats: [B, T, D] embedded F (gradient stopped here).
    salient: [B, T] bool (False on padding).
    probs: [B, T, C+1] softmax of the base frame logits.
    class_ids: [B, L] int, -1 for an empty slot.
    slots: N.
    mode: for `momentum` (no confidence selection) every candidate is the mean salient
      feature with the mean class probability (docs/fidelity.md).
  Returns:
    cand_feats [B, L, N, D], cand_scores [B, L, N], cand_valid [B, L, N] bool,
    cand_pos [B, L, N] int (snippet index, for order-independent tie-breaking).
  """
  feats = jax.lax.stop_gradient(feats)
  probs = jax.lax.stop_gradient(probs)
  safe_ids = jnp.maximum(class_ids, 0)
  class_probs = jnp.take_along_axis(probs, safe_ids[:, None, :], axis=-1)  # [B, T, L]
  class_probs = jnp.moveaxis(class_probs, 1, 2)  # [B, L, T]
  slot_ok = (class_ids >= 0)[:, :, None]
  if mode == 'momentum':
    count = salient.sum(-1)[:, None, None].astype(feats.dtype)  # [B, 1, 1]
    mean_feat = jnp.einsum('bt,btd->bd', salient.astype(feats.dtype), feats)
    mean_feat = mean_feat / jnp.maximum(count[:, 0], 1)  # [B, D]
    mean_prob = (class_probs * salient[:, None, :]).sum(-1, keepdims=True) / jnp.maximum(count, 1)
    shape = class_ids.shape + (slots,)
    cand_feats = jnp.broadcast_to(mean_feat[:, None, None, :], shape + (feats.shape[-1],))
    cand_scores = jnp.broadcast_to(mean_prob, shape)
    cand_valid = jnp.broadcast_to(slot_ok & (count > 0), shape)
    return cand_feats, cand_scores, cand_valid, jnp.zeros(shape, jnp.int32)
  num_snippets = feats.shape[1]
  if num_snippets < slots:  # top_k needs k <= T; the extra rows are never salient.
    pad = slots - num_snippets
    feats = jnp.pad(feats, ((0, 0), (0, pad), (0, 0)))
    salient = jnp.pad(salient, ((0, 0), (0, pad)))
    class_probs = jnp.pad(class_probs, ((0, 0), (0, 0), (0, pad)))
  masked = jnp.where(salient[:, None, :], class_probs, -jnp.inf)
  cand_scores, cand_pos = jax.lax.top_k(masked, slots)  # [B, L, N], descending
  cand_valid = jnp.isfinite(cand_scores) & slot_ok
  cand_feats = jax.vmap(lambda f, idx: f[idx])(feats, cand_pos)  # [B, L, N, D]
  cand_scores = jnp.where(cand_valid, cand_scores, 0.0)
  return cand_feats, cand_scores, cand_valid, cand_pos.astype(jnp.int32)


def _sort_rows(features, scores, filled):
  """Re-sorts each row's slots by score, descending (filled slots before empty ones)."""
  key = jnp.where(filled, -scores, jnp.inf)
  order = jnp.argsort(key, axis=-1, stable=True)
  take = lambda a: jnp.take_along_axis(a, order, axis=-1)
  feats = jnp.take_along_axis(features, order[..., None], axis=-2)
  return feats, take(scores), take(filled)


def update(memory: MemoryBank, cand_feats, cand_scores, cand_valid, class_ids, eta_value, mode):
  """One video's momentum update (Eq. 7, A14) of its ground-truth rows.

  Args:
    memory: the bank.
    cand_feats [L, N, D], cand_scores [L, N], cand_valid [L, N], class_ids [L]: one video's
      candidates (rank-aligned: slot i pairs with the i-th best candidate).
    eta_value: scalar eta.
    mode: `ours` M = (1-eta) M + eta cand, scores alike, then re-sort; `direct` the
      candidates replace the slots; `momentum` blends the mean salient feature (no
      confidence selection) and keeps slot order. Only slots with a candidate change.
  """
  if mode not in UPDATE_MODES + (EXACT_MERGE,):
    raise ValueError(f'Unknown memory update mode {mode!r}; expected one of {UPDATE_MODES}.')
  if mode == 'merge_blend':
    return merge_blend_update(memory, cand_feats, cand_scores, cand_valid, class_ids, eta_value)
  if mode == EXACT_MERGE:
    return exact_merge_blend_update(
      memory, cand_feats, cand_scores, cand_valid, class_ids, eta_value
    )
  num_classes = memory.num_classes
  rows = jnp.where(class_ids >= 0, class_ids, num_classes)  # out of range -> dropped
  safe = jnp.minimum(rows, num_classes - 1)
  old_f, old_s, old_filled = memory.features[safe], memory.scores[safe], memory.filled[safe]
  if mode == 'direct':
    new_f, new_s = cand_feats, cand_scores
  else:
    new_f = (1.0 - eta_value) * old_f + eta_value * cand_feats
    new_s = (1.0 - eta_value) * old_s + eta_value * cand_scores
  valid = cand_valid
  new_f = jnp.where(valid[..., None], new_f, old_f)
  new_s = jnp.where(valid, new_s, old_s)
  new_filled = old_filled | valid
  if mode != 'momentum':
    new_f, new_s, new_filled = _sort_rows(new_f, new_s, new_filled)
  return memory.replace(
    features=memory.features.at[rows].set(new_f, mode='drop'),
    scores=memory.scores.at[rows].set(new_s, mode='drop'),
    filled=memory.filled.at[rows].set(new_filled, mode='drop'),
  )


def merge_blend_update(memory: MemoryBank, cand_feats, cand_scores, cand_valid, class_ids, m):
  """The authors' update of one video: label slot by label slot, in order.

  Row c and the candidates are merged by score (descending; a row slot keeps the score it
  entered with, an empty slot is a zero vector with score 0), the top N kept, then
  row = m row + (1 - m) merged and scores = merged scores. m = 0 is the pure merge (the
  authors' phase up to `moment_up`). Slot by slot matters when two label slots name the
  same row (the released code's class-0 indexing): the second merge sees the first.

  The top-N candidates per label slot (`candidates`) are all the merge can ever keep: a
  salient snippet outside a video's top N for class c is beaten by N of its own candidates.

  Args:
    memory: the bank.
    cand_feats [L, N, D], cand_scores [L, N], cand_valid [L, N], class_ids [L]: one video.
    m: scalar weight of the old row.
  """
  slots = memory.features.shape[1]

  def one(mem, slot):
    feats, scores, valid, class_id = slot
    row = jnp.maximum(class_id, 0)
    row_f, row_s, row_filled = mem.features[row], mem.scores[row], mem.filled[row]
    all_s = jnp.concatenate([row_s, jnp.where(valid, scores, -jnp.inf)])
    all_f = jnp.concatenate([row_f, feats])
    all_filled = jnp.concatenate([row_filled, valid])
    # top_k keeps the lower index on ties: the row's slot before an equal candidate.
    merged_s, order = jax.lax.top_k(all_s, slots)
    new_f = m * row_f + (1.0 - m) * all_f[order]
    new_filled = row_filled | all_filled[order]
    return _write_row(mem, class_id, new_f, merged_s, new_filled), None

  memory, _ = jax.lax.scan(one, memory, (cand_feats, cand_scores, cand_valid, class_ids))
  return memory


def _write_row(mem: MemoryBank, class_id, features, scores, filled) -> MemoryBank:
  """Row `class_id` set to (features [N, D], scores [N], filled [N]); unchanged for -1."""
  row = jnp.maximum(class_id, 0)
  keep = class_id < 0
  return mem.replace(
    features=mem.features.at[row].set(jnp.where(keep, mem.features[row], features)),
    scores=mem.scores.at[row].set(jnp.where(keep, mem.scores[row], scores)),
    filled=mem.filled.at[row].set(jnp.where(keep, mem.filled[row], filled)),
  )


def all_salient_candidates(feats, salient, probs, class_ids):
  """Every salient snippet as a candidate of each label slot (the authors' candidate set).

  Args: feats [B, T, D] embedded F; salient [B, T] bool; probs [B, T, C+1]; class_ids [B, L].
  Returns: feats [B, T, D], scores [B, L, T] (P[t, c_l]), valid [B, L, T] bool.
  """
  feats = jax.lax.stop_gradient(feats)
  probs = jax.lax.stop_gradient(probs)
  scores = jnp.take_along_axis(probs, jnp.maximum(class_ids, 0)[:, None, :], axis=-1)
  valid = salient[:, None, :] & (class_ids >= 0)[:, :, None]
  return feats, jnp.moveaxis(scores, 1, 2), valid


def exact_merge_blend_update(memory: MemoryBank, feats, scores, valid, class_ids, m):
  """`merge_blend_update` over every salient snippet, equal scores ordered as torch does.

  Args:
    feats [T, D]; scores [L, T]; valid [L, T]; class_ids [L]: one video (as from
    `all_salient_candidates`); m: the weight of the old row.
  """

  def one(mem, slot):
    slot_scores, slot_valid, class_id = slot
    row = jnp.maximum(class_id, 0)
    row_f, row_s, row_filled = mem.features[row], mem.scores[row], mem.filled[row]
    order = torch_sort.merge_order(row_s, slot_scores, slot_valid)  # [N] into [row; snippets]
    from_row = order < row_s.shape[0]
    snippet = jnp.maximum(order - row_s.shape[0], 0)
    slot_index = jnp.minimum(order, row_s.shape[0] - 1)
    merged_f = jnp.where(from_row[:, None], row_f[slot_index], feats[snippet])
    merged_s = jnp.where(from_row, row_s[slot_index], slot_scores[snippet])
    new_f = m * row_f + (1.0 - m) * merged_f
    new_filled = row_filled | ~from_row | row_filled[slot_index]
    return _write_row(mem, class_id, new_f, merged_s, new_filled), None

  memory, _ = jax.lax.scan(one, memory, (scores, valid, class_ids))
  return memory


def read_rows(memory: MemoryBank, class_ids, include_empty: bool = False, nonempty_rows=False):
  """The memory rows of each video's label slots.

  Args:
    class_ids: [B, L] int, -1 for none.
    include_empty: every slot of a real label's row is readable, filled or not (the
      authors' code attends over the zero-initialised slots too).
    nonempty_rows: a row with no filled slot is not read at all, whatever `include_empty`
      (the `all_classes` read: classes absent so far are not zero rows to attend to).
  Returns:
    rows [B, L, N, D] and readable [B, L, N] bool (filled slots of real labels).
  """
  safe = jnp.maximum(class_ids, 0)
  real = (class_ids >= 0)[..., None]
  if include_empty:
    readable = jnp.broadcast_to(real, memory.filled[safe].shape)
  else:
    readable = memory.filled[safe] & real
  if nonempty_rows:
    readable = readable & memory.filled[safe].any(-1, keepdims=True)
  return memory.features[safe], readable


def background_candidates(feats, attention, mask, slots: int):
  """The background row's candidates (`model.dem_read='background'`, docs/fidelity.md).

  Each video's N lowest-attention true snippets, any of them (salient or not), scored 1 - a.
  Args: feats [B, T, D] embedded F; attention [B, T] the base foreground attention; mask
    [B, T] bool; slots N.
  Returns: as `candidates` with one label slot: feats [B, 1, N, D], scores [B, 1, N],
    valid [B, 1, N] bool, pos [B, 1, N] int32 (snippet index).
  """
  feats = jax.lax.stop_gradient(feats)
  score = 1.0 - jax.lax.stop_gradient(attention)
  mask = mask.astype(bool)
  if feats.shape[1] < slots:
    pad = slots - feats.shape[1]
    feats = jnp.pad(feats, ((0, 0), (0, pad), (0, 0)))
    score = jnp.pad(score, ((0, 0), (0, pad)))
    mask = jnp.pad(mask, ((0, 0), (0, pad)))
  top, pos = jax.lax.top_k(jnp.where(mask, score, -jnp.inf), slots)  # [B, N], descending
  valid = jnp.isfinite(top)
  cand_feats = jax.vmap(lambda f, idx: f[idx])(feats, pos)
  return (
    cand_feats[:, None], jnp.where(valid, top, 0.0)[:, None], valid[:, None],
    pos.astype(jnp.int32)[:, None],
  )  # fmt: skip


def all_background_candidates(attention, mask):
  """The background row's slot for `all_salient_candidates`: scores 1 - a [B, 1, T] and
  valid [B, 1, T] (every true snippet)."""
  score = 1.0 - jax.lax.stop_gradient(attention)
  return score[:, None], mask.astype(bool)[:, None]


def scan_updates(
  memory: MemoryBank,
  cand_feats,
  cand_scores,
  cand_valid,
  class_ids,
  eta_value,
  mode,
  *,
  include_empty: bool = False,
  trace: bool = False,
  read_ids=None,
  nonempty_rows: bool = False,
):
  """Sequential updates over a batch in video order (RSKP's per-video order, docs/design.md §4.1).

  Args: candidates of B videos ([B, L, N, D], [B, L, N], [B, L, N], [B, L]); `include_empty`
    and `nonempty_rows` as in `read_rows`; `trace` also returns the memory after each video's
    update; `read_ids` [B, L'] the rows each video reads when they are not the rows it
    updates (the `all_classes` read), `class_ids` by default.
  Returns:
    the final memory, and (rows [B, L, N, D], readable [B, L, N]): what video j reads,
    the memory as the videos before it left it; with `trace`, a fourth value (features
    [B, C, N, D], scores [B, C, N]) of the memory after each video.
  """

  def body(mem, video):
    f, s, v, ids, rids = video
    read = read_rows(mem, rids[None], include_empty, nonempty_rows)
    mem = update(mem, f, s, v, ids, eta_value, mode)
    after = (mem.features, mem.scores) if trace else None
    return mem, (read[0][0], read[1][0], after)

  read_ids = class_ids if read_ids is None else read_ids
  memory, (rows, readable, after) = jax.lax.scan(
    body, memory, (cand_feats, cand_scores, cand_valid, class_ids, read_ids)
  )
  if trace:
    return memory, rows, readable, after
  return memory, rows, readable


def init_merge(memory: MemoryBank, snippet_ids, cand_feats, cand_scores, cand_valid, cand_ids):
  """Merges a batch of candidates into the running initialisation (global top-N per class).

  The ranking is by score, ties broken by a global snippet id, so the result is the same
  for any order of videos and any split over devices (the merge is associative).

  Args:
    memory: the bank being initialised (its `filled` slots take part).
    snippet_ids: [C, N] int32 ids of the bank's current slots.
    cand_*: [B, L, N, ...] candidates as from `candidates`; cand_ids [B, L, N] int32 global
      snippet ids; the class of each slot is given by `class_ids` folded into cand_valid
      through `scatter_to_classes`.
  Returns:
    (memory, snippet_ids).
  """
  feats = jnp.concatenate([memory.features, cand_feats], axis=1)  # [C, N + K, D]
  scores = jnp.concatenate([memory.scores, cand_scores], axis=1)
  valid = jnp.concatenate([memory.filled, cand_valid], axis=1)
  ids = jnp.concatenate([snippet_ids, cand_ids], axis=1)
  big = jnp.iinfo(jnp.int32).max
  # lexsort: the last key is primary. Invalid entries go last.
  order = jnp.lexsort((jnp.where(valid, ids, big), jnp.where(valid, -scores, jnp.inf)), axis=-1)
  order = order[:, : memory.features.shape[1]]
  take = lambda a: jnp.take_along_axis(a, order, axis=-1)
  return (
    memory.replace(
      features=jnp.take_along_axis(feats, order[..., None], axis=1),
      scores=jnp.where(take(valid), take(scores), 0.0),
      filled=take(valid),
    ),
    jnp.where(take(valid), take(ids), big),
  )


def scatter_to_classes(num_classes, class_ids, cand_feats, cand_scores, cand_valid, cand_ids):
  """[B, L, N, ...] label-slot candidates -> [C, B*N, ...] per-class candidate lists."""
  batch, num_labels, slots = cand_scores.shape
  onehot = (class_ids[..., None] == jnp.arange(num_classes)) & (class_ids >= 0)[..., None]
  # Each (video, label slot) belongs to at most one class; a masked sum over L picks it.
  sel = onehot.astype(cand_scores.dtype)  # [B, L, C]
  feats = jnp.einsum('blc,blnd->cbnd', sel, cand_feats)
  scores = jnp.einsum('blc,bln->cbn', sel, cand_scores)
  valid = jnp.einsum('blc,bln->cbn', sel, cand_valid.astype(sel.dtype)) > 0
  # Integer ids would not survive a float einsum (> 2^24); a masked max keeps them exact.
  ids = jnp.max(jnp.where(onehot[..., None], cand_ids[:, :, None, :], -1), axis=1)  # [B, C, N]
  ids = jnp.moveaxis(ids, 0, 1)
  shape = (num_classes, batch * slots)
  return (
    feats.reshape(shape + cand_feats.shape[-1:]),
    scores.reshape(shape),
    valid.reshape(shape),
    ids.astype(jnp.int32).reshape(shape),
  )


def global_snippet_ids(video_index, cand_pos, max_snippets: int = 1 << 15):
  """A unique int32 per (video, snippet): video_index * 2^15 + t."""
  if max_snippets * 65536 > math.pow(2, 31):
    raise ValueError('max_snippets too large for int32 snippet ids.')
  return video_index[:, None, None] * max_snippets + cand_pos
