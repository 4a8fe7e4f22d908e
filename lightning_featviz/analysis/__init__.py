"""Analysis: arrays in, arrays out — kNN, measures, t-SNE maps, wrong cluster and label issues.

Owns exact kNN search and purity, one epoch's per-layer statistics, the one widened neighbour search per
layer that the other measures share (``neighbourhoods``), t-SNE fitting and map alignment, images in the
wrong semantic cluster and label-issue scores. Never draws a picture.

May import: ``capture`` (the bank's data).
"""
