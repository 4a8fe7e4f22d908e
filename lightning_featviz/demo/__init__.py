"""Demo: the built-in example — a coloured-digits dataset, image folders and a small classifier.

Off to the side of the flow: the library works without it; examples, tests and ``featviz demo``
use it.

May import: nothing else of lightning_featviz.
"""
