"""The training samples' list by area under the margin (``WrongClusterOptions(training_margins=True)``): each rank's
training-batch margins (:class:`~lightning_featviz.capture.training.TrainingMargins`), gathered on rank 0 at each
training epoch's end into a :class:`~lightning_featviz.analysis.history.TrainingHistory` (in the callback's
checkpoint state), written at the end of ``fit`` as ``featviz_label_issues/train_aum.csv`` by the run's folder.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from lightning_featviz.analysis.history import AUM_CSV_COLUMNS, TrainingHistory
from lightning_featviz.capture.trainer_data import known_class_names, sampler_batches, training_loader
from lightning_featviz.capture.training import TrainingMargins
from lightning_featviz.capture.warn import Warn
from lightning_featviz.outputs.run_folder import RunFolder
from lightning_featviz.runtime.distributed import gather_columns

#: Where the list goes, under the run's folder (without ``.csv``).
AUM_FILE = "featviz_label_issues/train_aum"


class TrainingAudit:
    """The training-batch margins of a fit and the list they make.

    Args:
        extractor: the ``capture.batch_extractor``.
        warn: ``warn(key, message)``, warning once per key.
    """

    def __init__(self, extractor: Any, warn: Warn):
        self.margins = TrainingMargins(extractor, warn)
        self.history = TrainingHistory()

    def start_fit(self, extractor: Any) -> None:
        """A new fit or validate (``setup``): the extractor as the options say now; a training epoch may record."""
        self.margins.detach()
        self.margins = TrainingMargins(extractor, self.margins.warn)

    def start_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Every rank, as a training epoch starts: the sampler's order where it can be read ahead, and the hook."""
        loader = training_loader(trainer)
        self.margins.start_epoch(pl_module, sampler_batches(loader) if loader is not None else None)

    def end_epoch(self, trainer: pl.Trainer) -> None:
        """Every rank (a collective): gather the epoch's margins; rank 0 records them."""
        columns = gather_columns(self.margins.take_columns())
        if trainer.is_global_zero and columns:
            self.history.append(trainer.current_epoch, columns)

    def write(self, trainer: pl.Trainer, log_dir: str | None, class_names: list[str] | None) -> str | None:
        """Rank 0, at the end of ``fit``: the list as ``<log dir>/featviz_label_issues/train_aum.csv``; its path."""
        if not trainer.is_global_zero or not self.history.epochs or log_dir is None:
            return None
        names = class_names or known_class_names(trainer, training_loader(trainer))
        folder = RunFolder(log_dir)
        return folder.log_csv(AUM_FILE, AUM_CSV_COLUMNS, self.history.rows(list(names)), trainer.global_step)

    def detach(self) -> None:
        self.margins.detach()

    def state_dict(self) -> dict[str, Any]:
        return self.history.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history.load_state_dict(state)
