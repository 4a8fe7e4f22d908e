"""Runtime: where and when the work runs — background worker, report process, distributed gathers.

Owns the background thread, the child process that renders reports off the training process, and
the uneven gathers and broadcasts across DDP ranks.

May import: ``capture``, ``analysis``, ``render``, ``outputs``, ``dashboard``, ``report``.
"""
