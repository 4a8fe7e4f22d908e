"""What the callback reads off a Lightning Trainer: the analysed validation loader, which dataset
samples its batches hold, class names, the step of epoch-end metrics — and a capture pass over
training samples (``reference="train"``). Works with Trainers of both Lightning namespaces."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, SequentialSampler, Subset

from lightning_featviz.capture.bank import BankData, Choice, FeatureBank, select_subset
from lightning_featviz.capture.batches import (
    attention_mask_of,
    probabilities_of,
    read_batch,
    scores_of,
    unknown_predictions,
)
from lightning_featviz.capture.compiled import eager
from lightning_featviz.capture.default_layers import default_layers
from lightning_featviz.capture.hooks import ActivationCapture, short_display_names
from lightning_featviz.capture.pooling import KnownModel


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
    # Private on purpose: `trainer.val_dataloaders` reads the fit loop's validation loader, which during a
    # `trainer.validate` after a fit is the fit's, not the one being validated; no public attribute has the latter.
    combined = trainer.validate_loop._combined_loader if validating else None
    loaders: Any = combined.iterables if combined is not None else trainer.val_dataloaders
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
    return loaders if isinstance(loaders, DataLoader) else None


def known_order(sampler: Any) -> bool:
    """Whether ``sampler`` draws the same order every time it is iterated, so that reading it once tells
    which dataset samples each batch holds: a sequential sampler, a fixed sequence of indices, a
    non-shuffling ``DistributedSampler`` (Lightning's too), a batch sampler over one of these. Random,
    weighted and subset-random samplers draw a new order when the real loop iterates, and an unknown
    sampler class may too."""
    if isinstance(sampler, BatchSampler):
        return known_order(sampler.sampler)
    if isinstance(sampler, (SequentialSampler, range, list, tuple)):
        return True
    if isinstance(sampler, DistributedSampler):
        # Lightning's DistributedSamplerWrapper shards another sampler, kept as `dataset._sampler`.
        wrapped = getattr(getattr(sampler, "dataset", None), "_sampler", None)
        return not sampler.shuffle and (wrapped is None or known_order(wrapped))
    return False


def sampler_batches(loader: DataLoader) -> list[Tensor] | None:
    """The dataset indices of each batch this epoch, read off a sampler whose order is known
    (:func:`known_order`); else None."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is None or not known_order(batch_sampler):
        return None
    with preserved_global_rng():
        return [torch.as_tensor(list(batch), dtype=torch.int64) for batch in batch_sampler]


def base_indices(dataset: Any, indices: Tensor) -> tuple[Any, Tensor]:
    """The dataset under any ``Subset`` wrappers, and the (n,) ``indices`` as positions in it."""
    indices = indices.long()
    while isinstance(dataset, Subset):
        indices = torch.as_tensor(dataset.indices, dtype=torch.int64)[indices]
        dataset = dataset.dataset
    return dataset, indices


def matching_rows(queries: Any, query_indices: Tensor, searched: Any, searched_indices: Tensor) -> Tensor | None:
    """(Q,) for each of ``query_indices`` (positions in dataset ``queries``), the position in
    ``searched_indices`` (of dataset ``searched``) of the same sample, -1 where it is not there; None
    when the two datasets are not views of one dataset (then no sample can be in both)."""
    base, query_base = base_indices(queries, query_indices)
    other, searched_base = base_indices(searched, searched_indices)
    if base is not other:
        return None
    position = {int(index): row for row, index in enumerate(searched_base.tolist())}
    rows = torch.tensor([position.get(int(index), -1) for index in query_base.tolist()], dtype=torch.int64)
    return rows if bool((rows >= 0).any()) else None


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


def training_loader(trainer: Any) -> DataLoader | None:
    """The training DataLoader (the datamodule's outside ``fit``), when it is one over a sized dataset."""
    loader = trainer.train_dataloader
    datamodule = datamodule_of(trainer)
    if loader is None and datamodule is not None:
        loader = datamodule.train_dataloader()
    if not isinstance(loader, DataLoader) or not hasattr(loader.dataset, "__len__"):
        return None
    return loader


def capture_training_bank(
    trainer: Any,
    pl_module: nn.Module,
    capture: ActivationCapture,
    max_reference: int,
    seed: int,
    extractor: Callable[[Any], tuple[Any, ...]] | None,
    vectors: Callable[[Tensor, dict[str, Tensor], Tensor | None], dict[str, Tensor]],
    thumbnails: Callable[[Tensor], Tensor],
) -> BankData | None:
    """Up to ``max_reference`` training samples (chosen by ``seed``) through a no-grad, eval-mode forward
    with ``capture`` attached: ``vectors(inputs, captured)`` of each (layer -> (B, D)), labels, predictions,
    class probabilities (in-sample: the model trained on these labels) and ``thumbnails(inputs)``. None
    when there is no training DataLoader over a sized dataset."""
    loader = training_loader(trainer)
    if loader is None:
        return None
    keep = select_subset(len(loader.dataset), max_reference, seed)  # type: ignore[arg-type]  # sized: checked
    batch_size = loader.batch_size or 64
    generator = torch.Generator().manual_seed(seed)  # a DataLoader draws its base seed from the global RNG otherwise
    subset = DataLoader(
        Subset(loader.dataset, keep.tolist()), batch_size, collate_fn=loader.collate_fn, generator=generator
    )
    bank = FeatureBank(len(keep), Choice(len(keep)))
    was_training = pl_module.training
    precision = getattr(trainer.precision_plugin, "forward_context", nullcontext)
    try:
        pl_module.eval()
        with preserved_global_rng(), torch.no_grad(), capture.attach(), precision():
            for position, raw in enumerate(subset):
                inputs, labels, _ = read_batch(raw, extractor)
                mask = attention_mask_of(raw, extractor)
                capture.attention_mask = mask
                output = pl_module(inputs.to(next(pl_module.parameters()).device))
                preds, confidences = scores_of(output) or unknown_predictions(len(labels))
                indices = keep[position * batch_size : position * batch_size + len(labels)]
                captured = vectors(inputs, capture.pop(), mask)
                bank.add(
                    indices,
                    labels.cpu(),
                    preds.cpu(),
                    confidences.cpu(),
                    captured,
                    thumbnails(inputs),
                    probabilities_of(output),
                )
    finally:
        pl_module.train(was_training)
    return bank.finalize()


def sample_paths(dataset: Any, indices: Sequence[int]) -> list[str] | None:
    """File paths of the samples at ``indices``, when the dataset has them (an ImageFolder, possibly
    inside ``Subset``s); otherwise None."""
    positions = [int(i) for i in indices]
    while isinstance(dataset, Subset):
        positions = [int(dataset.indices[i]) for i in positions]
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    if not isinstance(samples, (list, tuple)) or not samples or not isinstance(samples[0], (list, tuple)):
        return None
    return [str(samples[i][0]) for i in positions]


def probe_default_layers(
    trainer: Any,
    pl_module: nn.Module,
    dataloader_idx: int,
    extractor: Callable[[Any], tuple[Any, ...]] | None,
    seed: int,
    map_reduction: str,
    pool_size: int,
) -> tuple[dict[str, str], list[KnownModel], dict[str, str]]:
    """``layers="auto"``: the default layers (module path -> display name) found with one no-grad forward of an
    input shaped like the first validation batch: seeded noise where it is a float tensor, so that every rank
    (the same weights, the same input) finds the same layers without a collective. A module whose ``forward`` takes
    the batch (an HF model called with a dict) gets the dict batch, its input replaced by the noise. Also the models
    whose token pooling was identified on the probe, and the activation the head applies to the pooled layer
    (:attr:`~lightning_featviz.capture.default_layers.DefaultLayers.activations`).

    Raises:
        ValueError: the forward failed, with the way out.
    """
    try:
        loader = validation_loader(trainer, dataloader_idx)
        batch = next(iter(loader), None) if loader is not None else None
        if batch is None:
            raise ValueError("no validation batch")
        images = read_batch(batch, extractor).inputs
        original = images
        if images.is_floating_point():
            images = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=images.dtype)
        plugin = trainer.precision_plugin
        device = next(pl_module.parameters()).device
        example = images.to(device)
        example = plugin.convert_input(example) if hasattr(plugin, "convert_input") else example
        mask = attention_mask_of(batch, extractor)
        mask = mask.to(device) if mask is not None else None
        with preserved_global_rng(), getattr(plugin, "forward_context", nullcontext)(), eager():
            try:
                found = default_layers(pl_module, example, map_reduction, pool_size, mask=mask)
            except Exception:
                if not isinstance(batch, Mapping):
                    raise
                whole = {
                    key: (example if value is original else value.to(device) if isinstance(value, Tensor) else value)
                    for key, value in batch.items()
                }
                found = default_layers(pl_module, whole, map_reduction, pool_size, len(images), mask)
    except Exception as error:
        cause = str(error) if len(str(error)) < 400 else str(error)[:400] + " ..."
        raise ValueError(
            "Expected `layers='auto'` to find the default layers with one forward of the first validation "
            f"batch, but it failed ({type(error).__name__}: {cause}). Hint: pass `layers=[...]` "
            "(`featviz layers --module package.module.Class` lists the candidates and their reductions)."
        ) from error
    return short_display_names(pl_module, found.layers), found.identified, found.activations
