"""Outputs: where results go — TensorBoard, plain files, projector files, the static HTML page.

Owns the sink protocol and its TensorBoard and file implementations, PNG encoding, the projector's
checkpoint, metadata, sprite and config files, and the HTML report over a file sink's folder.

May import: nothing else of lightning_featviz.
"""
