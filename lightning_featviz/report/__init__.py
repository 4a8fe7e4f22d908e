"""Report: one analysed epoch turned into figures, tables, scalars and projector files.

Owns the epoch job handed to rank 0's reporter, the time budget that decides which outputs it makes
(``budget``: plain numbers; ``plan``: each epoch's plan), what a report holds and the one tag function
(``settings``), the figures and tables of an epoch, the files it writes (``exports``: wrong-cluster and label-issue
CSVs, projector files), the reporter that has the maps fitted and builds the
:class:`~lightning_featviz.report.reporter.Report`, and the
destination that writes a report to the sinks. No Lightning and no trainer state.

May import: ``capture``, ``analysis``, ``render``, ``outputs``, ``dashboard`` (whose files it writes).
"""
