"""Outputs: where results go, and the only writer — TensorBoard, plain files, the run's folder (CSV tables, projector
files, the FEATVIZ tab's files), the static HTML page, the experiment trackers.

Owns the one sink interface (``sinks.Sink``; ``sinks.FolderSink`` for the run's files) and its TensorBoard, file,
run-folder and tracker implementations, PNG encoding, the projector's checkpoint, metadata, sprite and config files,
CSV and Markdown tables, and the HTML report over a file sink's folder; the callback's own TensorBoard event file
(:mod:`.events`), and the one way every file is written: whole or not at all, never the disk's last MiB
(:mod:`.files`).

May import: nothing else of lightning_featviz.
"""
