"""Render: every picture, from arrays — neighbour grids, charts, t-SNE map figures.

Owns drawing on a canvas (the shipped font, colour tables, text fitting), charts (heatmaps, bars), neighbour
grids, purity charts and t-SNE map figures. Computes nothing about the data: it draws what it is given.

May import: nothing else of lightning_featviz.
"""
