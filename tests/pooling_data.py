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


def text_samples(count: int, left_padded: bool = False) -> list[dict[str, Tensor]]:
    """``count`` dict samples of 9 token ids, 3-9 of them real (padding id 0, on the right or the left), class c
    drawn from ids 5 + 15c to 19 + 15c, with their attention mask and label."""
    generator = torch.Generator().manual_seed(4)
    samples = []
    for index in range(count):
        label, length = index % 3, int(torch.randint(3, 10, (1,), generator=generator))
        ids = torch.zeros(9, dtype=torch.long)
        real = torch.randint(5 + 15 * label, 20 + 15 * label, (length,), generator=generator)
        if left_padded:
            ids[9 - length :] = real
        else:
            ids[:length] = real
        samples.append({"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor(label)})
    return samples


def text_module(model: nn.Module) -> Any:
    """A LightningModule around an HF ``*ForSequenceClassification`` ``model``, as a user writes one for dict
    batches of ``input_ids``, ``attention_mask`` and ``labels``."""
    import pytorch_lightning as pl

    class TextClassifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch: dict[str, Tensor]) -> Tensor:
            return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

        def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
            return self.model(**batch).loss

        def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
            self.log("val_acc", (self(batch).argmax(1) == batch["labels"]).float().mean())

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    return TextClassifier()


def bank_spy(*args: Any, **kwargs: Any) -> Any:
    """A FeatureVisualizer (same arguments) that keeps the last bank it analysed as ``.bank``."""
    from lightning_featviz import FeatureVisualizer

    class BankSpy(FeatureVisualizer):
        bank: Any = None

        def _analyse(self, trainer: Any, pl_module: Any, bank: Any) -> Any:
            self.bank = bank
            return super()._analyse(trainer, pl_module, bank)

    return BankSpy(*args, **kwargs)


def fit_text_once(tmp_path: Any, build: Any, samples: list[dict[str, Tensor]], train_batches: int) -> tuple[Any, ...]:
    """One epoch of the HF text classifier ``build()`` makes (seeded first) through a Trainer with the callback at
    its default layers (k = 5, kNN only), batches of 20 (15 for training); ``(trainer, bank spy, module)``."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    pl.seed_everything(0, verbose=False)
    module = text_module(build())
    visualizer = bank_spy(k=5, overhead=None, maps=False, projector=False, wrong_cluster=False, dashboard=False)
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=1, limit_train_batches=train_batches, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[visualizer],
    )  # fmt: skip
    trainer.fit(module, DataLoader(samples, batch_size=15), DataLoader(samples, batch_size=20))
    return trainer, visualizer, module


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
