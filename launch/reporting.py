"""The console side of the trainer's reports: progress lines and evaluation tables on stdout.

Each report is printed once, and not logged as well (`issf_jax.train.reporting.Reporter` logs
them when the trainer runs without a console, e.g. from a notebook or a test).
"""

from __future__ import annotations

from issf_jax.train import reporting


class ConsoleReporter(reporting.Reporter):
  def progress(self, progress: reporting.Progress) -> None:
    print(progress.line(), flush=True)

  def evaluation(self, step: int, epoch: int, table: str) -> None:
    print(f'\nEvaluation at step {step} (epoch {epoch}):\n{table}', flush=True)
