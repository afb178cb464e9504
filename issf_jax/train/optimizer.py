"""The optimizer: Adam with coupled L2 weight decay, as `torch.optim.Adam(weight_decay=5e-4)`.

RSKP accumulates gradients over 10 videos by SUMMING them (one `backward()` per video, one
`step()` every 10), then adds the L2 term once to the summed gradient. The train step
therefore hands this optimizer the global-batch SUM of per-video gradients (docs/design.md §4.4).
"""

from __future__ import annotations

import optax


def make_optimizer(config) -> optax.GradientTransformation:
  """g <- g + wd * theta; Adam(b1, b2, eps); theta <- theta - lr * update.

  Not AdamW: the decay enters the moments. It applies to every parameter (biases and the
  class centres included), exactly as torch does for parameters that receive a gradient.
  """
  return optax.chain(
    optax.add_decayed_weights(config.weight_decay),
    optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps),
    optax.scale(-config.lr),
  )
