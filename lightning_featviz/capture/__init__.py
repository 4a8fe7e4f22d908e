"""Capture: from a validation batch to one vector per sample and layer, kept in a bounded bank.

Owns reading batches (inputs, labels, dataset indices, predictions), resolving layer names and
forward hooks, reducing each layer's output layout to a vector, the ``"input"`` layer, the
default layer choice, the per-rank feature bank (each sample's thumbnail made once) and what is
read off a Lightning Trainer.

May import: nothing else of lightning_featviz (it is the bottom of the flow).
"""
