"""A CSV logger that survives a resume in place.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its directory already holds one, so ``ckpt_path=last``
in the interrupted run's directory would lose the curve before the interruption. This one keeps the old rows
that come before the first step the resumed run logs (rows after the checkpoint belong to the abandoned
stretch of a crashed run and are dropped) and appends the new ones.
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _KeepingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self._earlier: list[dict[str, str]] = []
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self._earlier = list(csv.DictReader(f))
            os.remove(self.metrics_file_path)  # written again, with the rows kept, at the first save

    def save(self) -> None:
        if self._earlier and self.metrics:
            first = min(int(m["step"]) for m in self.metrics)
            kept = [r for r in self._earlier if r.get("step") not in (None, "") and int(r["step"]) < first]
            self._earlier = []
            self.metrics = [*kept, *self.metrics]
        super().save()


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` continues across ``ckpt_path=last`` resumes in the same directory."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
