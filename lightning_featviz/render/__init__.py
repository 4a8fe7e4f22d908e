"""Render: every picture, from arrays — neighbour grids, charts, t-SNE map figures.

Owns the charts and t-SNE map figures, drawn with matplotlib (``style``: size, type scale, pixels; ``chart``:
heatmaps, bars, colour bars; ``purity_charts``; ``maps``), the image mosaics drawn with Pillow (``canvas``: font,
text, titles; ``grids``: neighbour grids and galleries), the class colours (``colours``) and short class names
(``names``). Computes nothing about the data: it draws what it is given.

May import: nothing else of lightning_featviz.
"""
