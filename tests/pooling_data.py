"""Data and references shared by the pooling tests (tests/test_timm_pooling.py, tests/test_hf_pooling.py,
tests/test_hf_heads.py): tiny HF configs, their batches, training data and scikit-learn's purity."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors
from torch import Tensor, nn

SMALL = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
IMAGE = {**SMALL, "image_size": 16, "patch_size": 4, "num_labels": 3}
TEXT = {**SMALL, "vocab_size": 60, "max_position_embeddings": 32, "num_labels": 3}


class ForwardBatch(nn.Module):
    """What HF users write in a LightningModule: ``forward(batch)`` calls the model with the dict's tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(**{key: value for key, value in batch.items() if key != "labels"}).logits


def image_batch() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"pixel_values": torch.rand(4, 3, 16, 16, generator=generator), "labels": torch.tensor([0, 1, 2, 0])}


def text_batch() -> dict[str, Tensor]:
    """Four padded sentences of lengths 9, 5, 3 and 7 (padding id 0, masked out)."""
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 60, (4, 9), generator=generator)
    lengths = torch.tensor([9, 5, 3, 7])
    mask = (torch.arange(9)[None] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 0])}


def coloured_squares(count: int, seed: int, side: int = 16) -> list[dict[str, Tensor]]:
    """Easy images for training tests: class c is a square of colour c (red, green, blue) at a random place on
    dark noise. Dict samples, as HF datasets give them."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for index in range(count):
        label = index % 3
        image = 0.1 * torch.rand(3, side, side, generator=generator)
        top, left = (int(v) for v in torch.randint(0, side // 2, (2,), generator=generator))
        image[label, top : top + side // 2, left : left + side // 2] += 0.8
        samples.append({"pixel_values": image, "labels": torch.tensor(label)})
    return samples


def sklearn_purity(vectors: Any, labels: Any, k: int) -> float:
    """Leave-one-out kNN purity by scikit-learn: the reference the callback must equal."""
    found = NearestNeighbors(n_neighbors=k + 1).fit(vectors).kneighbors(vectors, return_distance=False)
    neighbours = np.array([[j for j in row if j != i][:k] for i, row in enumerate(found)])
    return float((labels[neighbours] == labels[:, None]).mean())


def fit_six_epochs(tmp_path: Any, module: Any, train: Any, val: Any) -> tuple[Any, Any]:
    """Train ``module`` for 6 epochs with the callback at its default layers (k = 5, kNN only, every epoch);
    the Trainer and the callback, to read what it logged."""
    import pytorch_lightning as pl

    from lightning_featviz import FeatureVisualizer

    visualizer = FeatureVisualizer(
        k=5, overhead=None, maps=False, projector=False, wrong_cluster=False, dashboard=False
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=6, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=1, deterministic=True, callbacks=[visualizer],
    )  # fmt: skip
    trainer.fit(module, train, val)
    return trainer, visualizer
