"""What the trainer reports while it runs: progress at log steps and each evaluation.

The trainer calls a `Reporter` on process 0 only. This default one writes through absl logging
(the library prints nothing); `launch/reporting.py` prints the same to the console for the
commands. Epochs are counted from 1 in both lines: a step of epoch e and the evaluation at the
end of epoch e both say "epoch e".

clu's `periodic_actions.ReportProgress` (clu 0.0.12 works with our jax 0.10.2) is not used: the
trainer reports at its log steps and epoch ends, which it knows, so steps/s and the ETA are one
division here; `Profile` has no use on the CPU machines this is developed on, and
`jax.profiler.trace` is one line where it is wanted.
"""

from __future__ import annotations

import dataclasses

from absl import logging


@dataclasses.dataclass(frozen=True)
class Progress:
  step: int  # optimizer steps done
  total_steps: int
  epoch: int  # 1-based epoch of the last step
  metrics: dict  # host floats of the last step
  steps_per_second: float  # since the previous report
  eta_seconds: float

  def line(self) -> str:
    return (
      f'epoch {self.epoch:4d}  step {self.step:6d}/{self.total_steps}  '
      f'loss {self.metrics["loss"]:.4f}  {self.steps_per_second:.2f} steps/s  '
      f'ETA {self.eta_seconds / 60:.1f} min'
    )


class Reporter:
  """The trainer's reports, as absl log records."""

  def progress(self, progress: Progress) -> None:
    logging.info('%s', progress.line())

  def evaluation(self, step: int, epoch: int, table: str) -> None:
    logging.info('Evaluation at step %d (epoch %d):\n%s', step, epoch, table)
