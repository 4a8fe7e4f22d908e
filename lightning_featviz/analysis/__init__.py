"""Analysis: arrays in, arrays out — everything an epoch's outputs are made from, in one results object.

Owns the epoch's :class:`~.results.EpochResults` and what fills it: exact kNN search and purity (FAISS on the CPU,
the torch search on a GPU), one epoch's
per-layer statistics (``measures``), the one widened neighbour search per layer that the other measures share
(``neighbourhoods``), t-SNE fitting (openTSNE) and map alignment, images in the wrong semantic cluster, label-issue
scores, and the report job's half of an epoch (``epoch.analyse_epoch``). Never draws a picture, never writes a file.

May import: ``capture`` (the bank's data, the ``Warn`` type).
"""
