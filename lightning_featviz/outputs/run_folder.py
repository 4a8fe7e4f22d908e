"""The run's own folder, beside its event files: the files an epoch's report leaves there, written by
:class:`RunFolder`, a :class:`~lightning_featviz.outputs.sinks.FolderSink`.

- CSV tables: ``featviz_wrong_cluster/epoch_NNN_<layer>.csv``, ``featviz_label_issues/epoch_NNN_<layer>.csv`` (and
  ``_train.csv``), named by the report;
- the projector's files, into the folders the TensorBoard and file sinks show them from (:mod:`.projector`);
- the FEATVIZ tab's files (``featviz_dashboard/``), in the dashboard's own format.

Each file is written whole or not at all (:mod:`.files`). The report job writes to it where it runs (the report
process): images, scalars and texts go to the logger sinks in the training process, so here they are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lightning_featviz.outputs.projector import ProjectorEntry, write_projector
from lightning_featviz.outputs.sinks import EncodedImage, FolderFiles
from lightning_featviz.outputs.tables import write_csv


class RunFolder:
    """The files of the run's folder ``root`` (the run's log dir).

    Attributes:
        root: the folder.
    """

    receives_module_metrics = False
    projector_dir: str | None = None  # the projector's files go into the folders `log_projector` is given

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def log_csv(self, name: str, columns: Sequence[str], rows: Iterable[Mapping[str, object]], step: int) -> str:
        """Write ``<root>/<name>.csv`` (rows streamed: a generator is never held whole); return its path."""
        path = self.root / f"{name}.csv"
        write_csv(path, columns, rows)
        return str(path)

    def log_projector(self, folders: Sequence[str], entries: Sequence[ProjectorEntry], replace_prefix: str) -> None:
        for folder in folders:
            write_projector(folder, entries, replace_prefix=replace_prefix)

    def log_folder_files(self, files: FolderFiles, step: int) -> None:
        files.write(self.root)

    def log_image(self, tag: str, image: EncodedImage, step: int) -> None:
        """Nothing: images go to the logger sinks."""

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        """Nothing: scalars go to the logger sinks."""

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Nothing: texts go to the logger sinks."""

    def log_thumbnails(self, tag: str, images: Sequence[EncodedImage], step: int) -> None:
        """Nothing: thumbnails go to the logger sinks."""

    def finish_epoch(self) -> None:
        """Nothing to flush: every file is whole when its call returns."""
