"""Report: one analysed epoch turned into pictures, tables and scalars — drawn, not computed, and written by others.

Owns the epoch job handed to rank 0's reporter (which has ``analysis.epoch.analyse_epoch`` complete the epoch's
results first), the time budget that decides which outputs it makes (``budget``: plain numbers; ``plan``: each
epoch's plan), what a report holds and the one tag function (``settings``), the figures and tables of an epoch, the
CSV tables (``exports``) and projector entries it hands the run's folder, the reporter that builds the
:class:`~lightning_featviz.report.reporter.Report`, and the destination that hands a report to the sinks. No
Lightning, no trainer state, no file opened here: ``outputs`` writes.

May import: ``capture``, ``analysis``, ``render``, ``outputs``, ``dashboard`` (whose epoch files it makes).
"""
