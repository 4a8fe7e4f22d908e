"""What the callback reads off a Lightning Trainer: the analysed validation loader, which dataset
samples its batches hold, class names, the step of epoch-end metrics — and a capture pass over
training samples (``reference="train"``). Works with Trainers of both Lightning namespaces."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler, Subset

from lightning_featviz.bank import BankData, FeatureBank, select_subset
from lightning_featviz.batches import probabilities_of, read_batch, scores_of, unknown_predictions
from lightning_featviz.capture import INPUT_LAYER, ActivationCapture, reduce_input


@contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore torch's, numpy's and Python's global RNG states afterwards (training must not notice us)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def datamodule_of(trainer: Any) -> Any:
    return getattr(trainer, "datamodule", None)


def validation_loader(trainer: Any, dataloader_idx: int) -> DataLoader | None:
    """The validation DataLoader number ``dataloader_idx`` of the running fit or validate, if any."""
    validating = trainer.state.fn == "validate"
    combined = trainer.validate_loop._combined_loader if validating else None
    loaders: Any = combined.iterables if combined is not None else trainer.val_dataloaders
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
    return loaders if isinstance(loaders, DataLoader) else None


def sampler_batches(loader: DataLoader) -> list[Tensor] | None:
    """The dataset indices of each batch this epoch, read off a non-random batch sampler; else None."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is None or isinstance(getattr(batch_sampler, "sampler", None), RandomSampler):
        return None
    with preserved_global_rng():
        return [torch.as_tensor(list(batch), dtype=torch.int64) for batch in batch_sampler]


def known_class_names(trainer: Any, loader: DataLoader | None) -> list[str]:
    """``.classes`` (or ``.class_names``) of the datamodule, or of the loader's dataset or a dataset it wraps."""
    datamodule = datamodule_of(trainer)
    candidates = [datamodule] if datamodule is not None else []
    dataset = loader.dataset if loader is not None else None
    while dataset is not None:
        candidates.append(dataset)
        dataset = getattr(dataset, "dataset", None)
    for candidate in candidates:
        for attribute in ("classes", "class_names"):
            names = getattr(candidate, attribute, None)
            if isinstance(names, (list, tuple)):
                return [str(name) for name in names]
    return []


def logged_step(trainer: Any) -> int:
    """The step Lightning gives epoch-end metrics, so our images and scalars line up with them."""
    return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))


def allows_empty_ranks(trainer: Any, pl_module: nn.Module) -> bool:
    """Whether Lightning lets a rank have an empty dataloader (otherwise it raises before any loop runs)."""
    holders = [pl_module, datamodule_of(trainer)]
    return any(getattr(h, "allow_zero_length_dataloader_with_multiple_devices", False) for h in holders)


def capture_training_bank(
    trainer: Any,
    pl_module: nn.Module,
    capture: ActivationCapture,
    paths: Mapping[str, str],
    max_reference: int,
    seed: int,
    input_size: int,
    extractor: Callable[[Any], tuple[Any, ...]] | None,
    thumbnails: Callable[[Tensor], Tensor],
) -> BankData | None:
    """Up to ``max_reference`` training samples (chosen by ``seed``) through a no-grad, eval-mode forward
    with ``capture`` attached: their vectors for each ``paths`` layer (path -> display name), labels,
    predictions, class probabilities (in-sample: the model trained on these labels) and thumbnails.
    None when there is no training DataLoader over a sized dataset."""
    loader = trainer.train_dataloader
    datamodule = datamodule_of(trainer)
    if loader is None and datamodule is not None:
        loader = datamodule.train_dataloader()
    if not isinstance(loader, DataLoader) or not hasattr(loader.dataset, "__len__"):
        return None
    keep = select_subset(len(loader.dataset), max_reference, seed)
    batch_size = loader.batch_size or 64
    generator = torch.Generator().manual_seed(seed)  # a DataLoader draws its base seed from the global RNG otherwise
    subset = DataLoader(
        Subset(loader.dataset, keep.tolist()), batch_size, collate_fn=loader.collate_fn, generator=generator
    )
    bank = FeatureBank(keep)
    was_training = pl_module.training
    precision = getattr(trainer.precision_plugin, "forward_context", nullcontext)
    try:
        pl_module.eval()
        with preserved_global_rng(), torch.no_grad(), capture.attach(), precision():
            for position, raw in enumerate(subset):
                images, labels, _ = read_batch(raw, extractor)
                output = pl_module(images.to(next(pl_module.parameters()).device))
                captured = capture.pop()
                preds, confidences = scores_of(output) or unknown_predictions(len(labels))
                indices = keep[position * batch_size : position * batch_size + len(labels)]
                vectors = {
                    display: reduce_input(images, input_size).cpu() if path == INPUT_LAYER else captured[path]
                    for path, display in paths.items()
                }
                probabilities = probabilities_of(output)
                bank.add(
                    indices, labels.cpu(), preds.cpu(), confidences.cpu(), vectors, thumbnails(images), probabilities
                )
    finally:
        pl_module.train(was_training)
    return bank.finalize()
