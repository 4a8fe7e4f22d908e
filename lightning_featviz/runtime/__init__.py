"""Runtime: where and when the work runs — background worker, report process, distributed gathers.

Owns the background thread, the child process that renders reports off the training process, and
the uneven gathers and broadcasts across DDP ranks (and rank 0's analysis that every rank waits for), and what a
failure does to training (``guard``: warn once, or raise with ``strict``).

May import: ``capture``, ``analysis``, ``render``, ``outputs``, ``dashboard``, ``report``.
"""
