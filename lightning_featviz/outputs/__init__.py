"""Outputs: where results go — TensorBoard, plain files, projector files, the static HTML page.

Owns the sink protocol and its TensorBoard and file implementations, PNG encoding, the projector's
checkpoint, metadata, sprite and config files, and the HTML report over a file sink's folder; the callback's own
TensorBoard event file (:mod:`.events`), and the one way every file is written: whole or not at all, never the
disk's last MiB (:mod:`.files`).

May import: nothing else of lightning_featviz.
"""
