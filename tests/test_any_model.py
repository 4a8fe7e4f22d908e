"""Classifiers that are not the demo's CNN, and data that would mislead a naive analysis: vector inputs,
many classes, samplers whose order is unknown, a constant layer, a layer that changes shape, a training
reference that holds the validation samples. Real Trainer runs, each checked against a reference
computed another way (scikit-learn) or against a property the right answer must have."""

from __future__ import annotations

import glob
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import TinyNet, tiny_trainer
from sklearn.neighbors import NearestNeighbors
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, SubsetRandomSampler, WeightedRandomSampler

from lightning_featviz import CaptureOptions, FeatureVisualizer, MapOptions, OutputOptions
from lightning_featviz.analysis.knn import neighbour_stats


def blobs(classes: int, per_class: int, dims: int = 12, spread: float = 0.6, seed: int = 0):
    """(N, dims) float vectors around one random centre per class, and (N,) labels, class by class."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=generator) * 3
    labels = torch.arange(classes).repeat_interleave(per_class)
    vectors = centres[labels] + spread * torch.randn(len(labels), dims, generator=generator)
    return vectors, labels


class Tabular(Dataset):
    def __init__(self, vectors, labels, with_index=False):
        self.vectors, self.labels, self.with_index = vectors, labels, with_index
        self.classes = [f"class_{c}" for c in range(int(labels.max()) + 1)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        item = (self.vectors[index], int(self.labels[index]))
        return (*item, index) if self.with_index else item


class Classifier(pl.LightningModule):
    """Cross-entropy training and validation loss on ``(inputs, labels)`` batches, Adam."""

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class MLP(Classifier):
    """An MLP on tabular vectors: hidden -> features -> head."""

    def __init__(self, dims: int = 12, classes: int = 6, dead: bool = False, square: bool = False):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(dims, 32), nn.ReLU())
        self.features = nn.Sequential(nn.Linear(32, 16), nn.ReLU())
        self.dead = nn.ReLU()  # fed -|x| - 1 when `dead`: always zero, like a dead ReLU
        self.gram = nn.Identity()  # fed x @ x.T when `square`: (B, B), its width is the batch size
        self.unused = nn.Linear(4, 4)
        self.head = nn.Linear(16, classes)
        self.use_dead, self.use_square = dead, square

    def forward(self, x):
        features = self.features(self.hidden(x))
        if self.use_dead:
            self.dead(-features.abs() - 1)
        if self.use_square:
            self.gram(features @ features.T)
        return self.head(features)


def sklearn_purity(vectors: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Leave-one-out kNN purity by scikit-learn: the reference the callback must equal."""
    found = NearestNeighbors(n_neighbors=k + 1).fit(vectors).kneighbors(vectors, return_distance=False)
    neighbours = np.array([[j for j in row if j != i][:k] for i, row in enumerate(found)])
    return float((labels[neighbours] == labels[:, None]).mean())


class BankSpy(FeatureVisualizer):
    """The callback, keeping the last bank it analysed (to check which samples it holds)."""

    bank = None

    def _analyse(self, trainer, pl_module, bank):
        self.bank = bank
        return super()._analyse(trainer, pl_module, bank)


def test_an_mlp_on_vector_data_gets_every_output_but_the_image_ones(tmp_path):
    vectors, labels = blobs(classes=6, per_class=40)
    train, val = Tabular(vectors, labels), Tabular(vectors + 0.1, labels)
    visualizer = FeatureVisualizer(["input", "hidden", "features"], overhead=None, k=5, maps=MapOptions(dims=[2]))
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[visualizer])
    with pytest.warns(UserWarning, match=r"vector inputs \(32, 12\), not images.*left out"):
        trainer.fit(MLP(), DataLoader(train, batch_size=32, shuffle=True), DataLoader(val, batch_size=32))
    expected = sklearn_purity(val.vectors.numpy(), labels.numpy(), k=5)  # "input" is the vector itself
    assert trainer.callback_metrics["featviz/knn_purity@5/input"].item() == pytest.approx(expected, abs=1e-6)
    for layer in ("hidden", "features"):
        assert 0 < trainer.callback_metrics[f"featviz/knn_accuracy@5/{layer}"].item() <= 1
    log_dir = trainer.log_dir
    images = {tag for path in glob.glob(f"{log_dir}/events.out.tfevents.*") for tag in _image_tags(log_dir)}
    assert any(tag.startswith("featviz/tsne_2d/") for tag in images)
    assert any(tag.startswith("featviz/neighbour_confusion/") for tag in images)
    assert not any(tag.startswith(("featviz/neighbours/", "featviz/wrong_cluster/")) for tag in images)
    config = Path(log_dir, "projector_config.pbtxt").read_text()
    assert "embeddings" in config and "sprite" not in config  # vectors and metadata, no thumbnails
    assert glob.glob(f"{log_dir}/featviz_wrong_cluster/*.csv")


def _image_tags(log_dir):
    from conftest import read_events

    return read_events(log_dir).Tags()["images"]


def test_five_hundred_classes_keep_k_plus_one_each_or_say_what_caps_purity(tmp_path):
    vectors, labels = blobs(classes=500, per_class=12, dims=16, spread=0.01)  # perfectly separable
    loader = DataLoader(Tabular(vectors, labels), batch_size=500)
    model = MLP(dims=16, classes=500)
    capped = FeatureVisualizer(
        ["input"], overhead=None, k=10, maps=MapOptions(every_n_epochs=None), outputs=OutputOptions(confusion=False)
    )
    with pytest.warns(UserWarning, match=r"cannot exceed 0\.300.*`max_samples` >= 5500"):
        tiny_trainer(tmp_path / "capped", logger=False, callbacks=[capped]).validate(model, loader)
    assert capped.history[0]["knn_purity"] == pytest.approx(0.3)  # 4 per class: 3 of 10 neighbours can share it
    enough = FeatureVisualizer(
        ["input"],
        overhead=None,
        k=10,
        max_samples=5500,
        maps=MapOptions(every_n_epochs=None),
        outputs=OutputOptions(confusion=False),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path / "enough", logger=False, callbacks=[enough]).validate(model, loader)
    assert not [w for w in caught if "cannot exceed" in str(w.message)]
    assert enough.history[0]["knn_purity"] == pytest.approx(1.0)  # 11 per class kept, every neighbour its own


def _sampler(kind, size):
    generator = torch.Generator().manual_seed(1)
    if kind == "subset-random":
        return SubsetRandomSampler(range(size), generator=generator)
    if kind == "weighted":
        return WeightedRandomSampler(torch.ones(size), size, replacement=True, generator=generator)
    return RandomSampler(range(size), generator=generator)


@pytest.mark.parametrize("kind", ["subset-random", "weighted", "random"])
def test_a_sampler_of_unknown_order_needs_indices_from_the_batch(tmp_path, kind):
    vectors, labels = blobs(classes=4, per_class=30)
    data = Tabular(vectors, labels)
    loader = DataLoader(data, batch_size=16, sampler=_sampler(kind, len(data)))
    refused = BankSpy(
        ["input"], overhead=None, k=5, maps=MapOptions(every_n_epochs=None), outputs=OutputOptions(confusion=False)
    )
    with pytest.warns(UserWarning, match="cannot tell which dataset samples.*`capture.batch_extractor`"):
        tiny_trainer(tmp_path / "refused", logger=False, callbacks=[refused]).validate(MLP(), loader)
    assert refused.bank is None and refused.history == []  # nothing analysed, no number at all
    indexed = DataLoader(Tabular(vectors, labels, with_index=True), batch_size=16, sampler=_sampler(kind, len(data)))
    told = BankSpy(
        ["input"],
        overhead=None,
        k=5,
        maps=MapOptions(every_n_epochs=None),
        outputs=OutputOptions(confusion=False),
        capture=CaptureOptions(batch_extractor=tuple),
    )
    tiny_trainer(tmp_path / "told", logger=False, callbacks=[told]).validate(MLP(), indexed)
    rows = told.bank.indices
    assert torch.equal(told.bank.labels, labels[rows])  # every row is the dataset sample its index names
    assert torch.equal(told.bank.vectors["input"], vectors[rows])


def test_a_head_with_more_outputs_than_the_validation_labels_use_is_analysed_with_every_output_a_class(tmp_path):
    # 6 outputs, 4 classes in the data: the label issues and their history read (N, 6) probabilities
    vectors, labels = blobs(classes=4, per_class=30)
    visualizer = FeatureVisualizer(["features"], overhead=None, k=5, maps=MapOptions(every_n_epochs=None))
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.validate(MLP(classes=6), DataLoader(Tabular(vectors, labels), batch_size=32))
    assert not [w for w in record if "could not analyse" in str(w.message)]
    assert [history.num_classes for history in visualizer._dynamics.histories.values()] == [6]


def test_a_constant_layer_gets_an_undefined_purity_and_one_warning_not_an_index_order_number(tmp_path):
    vectors, labels = blobs(classes=4, per_class=30)
    loader = DataLoader(Tabular(vectors, labels), batch_size=32)
    visualizer = FeatureVisualizer(
        ["dead", "features"],
        overhead=None,
        k=5,
        maps=MapOptions(every_n_epochs=None),
        outputs=OutputOptions(confusion=False),
    )
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer])
    with pytest.warns(UserWarning, match=r"Layer 'dead': 100% of the samples.*undefined \(NaN\)"):
        trainer.validate(MLP(dead=True), loader)
    assert trainer.callback_metrics["featviz/knn_purity@5/dead"].isnan()
    assert 0 < trainer.callback_metrics["featviz/knn_purity@5/features"].item() <= 1


def test_a_layer_that_changes_shape_within_an_epoch_is_dropped_and_the_others_go_on(tmp_path):
    vectors, labels = blobs(classes=4, per_class=25)  # 100 samples: batches of 32, 32, 32 and 4
    loader = DataLoader(Tabular(vectors, labels), batch_size=32)
    visualizer = FeatureVisualizer(
        ["gram", "features"],
        overhead=None,
        k=5,
        maps=MapOptions(every_n_epochs=None),
        outputs=OutputOptions(confusion=False),
    )
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer])
    with pytest.warns(UserWarning, match=r"Layer 'gram'.*changed shape from \(32,\) to \(4,\)"):
        trainer.validate(MLP(square=True), loader)
    assert "featviz/knn_purity@5/gram" not in trainer.callback_metrics
    assert 0 < trainer.callback_metrics["featviz/knn_purity@5/features"].item() <= 1
    strict = FeatureVisualizer(
        ["gram"],
        overhead=None,
        k=5,
        strict=True,
        maps=MapOptions(every_n_epochs=None),
        outputs=OutputOptions(confusion=False),
    )
    with pytest.raises(ValueError, match="changed shape"):
        tiny_trainer(tmp_path / "strict", logger=False, callbacks=[strict]).validate(MLP(square=True), loader)


def test_a_layer_that_never_runs_fails_at_the_first_batch_naming_it(tmp_path, small_data):
    vectors, labels = blobs(classes=4, per_class=25)
    data = Tabular(vectors, labels)
    visualizer = FeatureVisualizer(["unused", "features"], overhead=None, k=5)
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer], max_epochs=1)
    with pytest.raises(ValueError, match=r"\['unused'\] did not"):
        trainer.fit(MLP(), DataLoader(data, batch_size=32), DataLoader(data, batch_size=32))


def test_a_training_reference_that_holds_the_validation_samples_never_counts_a_sample_as_its_own_neighbour(
    tmp_path, small_data
):
    # Validation searched among the same samples as a "training" reference equals leave-one-out.
    small_data.train = small_data.val
    purities = {}
    for reference in ("val", "train"):
        visualizer = FeatureVisualizer(
            ["input", "pool"],
            overhead=None,
            k=5,
            capture=CaptureOptions(reference=reference, max_reference=500),
            maps=MapOptions(every_n_epochs=None),
            outputs=OutputOptions(confusion=False, neighbour_grids=False),
            wrong_cluster=False,
        )
        pl.seed_everything(0)
        tiny_trainer(tmp_path / reference, logger=False, callbacks=[visualizer]).validate(
            TinyNet(), datamodule=small_data
        )
        purities[reference] = {row["layer"]: row["knn_purity"] for row in visualizer.history}
    assert purities["train"] == pytest.approx(purities["val"], abs=1e-6)
    assert purities["train"]["input"] < 1.0  # a sample found as its own neighbour would give purity 1


def test_test_and_predict_say_once_that_only_validation_is_analysed(tmp_path):
    vectors, labels = blobs(classes=4, per_class=10)
    loader = DataLoader(Tabular(vectors, labels), batch_size=20)
    visualizer = FeatureVisualizer(["features"], overhead=None, k=3)
    trainer = tiny_trainer(tmp_path, logger=False, callbacks=[visualizer])
    model = MLP()
    model.test_step = model.validation_step
    with pytest.warns(UserWarning, match=r"validation loops only.*`trainer.test` runs without it"):
        trainer.test(model, loader)
    assert visualizer.history == []


class Sequences(Dataset):
    """(T, F) float sequences whose class sets the frequency of a sine in the first feature."""

    def __init__(self, size: int, steps: int = 12, features: int = 3, classes: int = 4, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(size) % classes
        time = torch.linspace(0, 6.28, steps)
        signal = torch.sin(time[None, :] * (1 + self.labels[:, None]))
        self.x = 0.3 * torch.randn(size, steps, features, generator=generator)
        self.x[:, :, 0] += signal

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.x[index], int(self.labels[index])


class SequenceClassifier(Classifier):
    """An LSTM over (B, T, F) batches (transposed to (T, B, F) when not ``batch_first``), last step -> head."""

    def __init__(self, batch_first: bool, features: int = 3, classes: int = 4):
        super().__init__()
        self.batch_first = batch_first
        self.lstm = nn.LSTM(features, 16, batch_first=batch_first)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        out, _ = self.lstm(x if self.batch_first else x.transpose(0, 1))
        return self.head(out[:, -1] if self.batch_first else out[-1])


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "sequence-first, steps == batch"])
def test_an_lstm_classifier_is_analysed_per_sequence_in_either_layout(tmp_path, batch_first):
    # Sequence-first with 12 steps and batches of 12 is the case that used to crash `fit`.
    data = Sequences(96, steps=12)
    visualizer = FeatureVisualizer(["input", "lstm"], overhead=None, k=5, maps=MapOptions(dims=[2]))
    trainer = tiny_trainer(tmp_path, max_epochs=1, logger=False, callbacks=[visualizer])
    model = SequenceClassifier(batch_first)
    with pytest.warns(UserWarning, match="sequence inputs"):
        trainer.fit(model, DataLoader(data, batch_size=12, shuffle=True), DataLoader(data, batch_size=12))
    model.eval()
    with torch.no_grad():  # the reference: the LSTM's outputs averaged over time, one 16-d vector per sequence
        out, _ = model.lstm(data.x if batch_first else data.x.transpose(0, 1))
        vectors = out.mean(dim=1 if batch_first else 0)
    expected = sklearn_purity(vectors.numpy(), data.labels.numpy(), k=5)
    assert trainer.callback_metrics["featviz/knn_purity@5/lstm"].item() == pytest.approx(expected, abs=1e-6)
    steps = F.adaptive_avg_pool1d(data.x.transpose(1, 2), 16).transpose(1, 2).flatten(1)  # 12 steps -> 16
    expected_input = sklearn_purity(steps.numpy(), data.labels.numpy(), k=5)
    assert trainer.callback_metrics["featviz/knn_purity@5/input"].item() == pytest.approx(expected_input, abs=1e-6)


class Texts(Dataset):
    """Token-id sequences (T,) whose class decides which block of the vocabulary most tokens come from."""

    def __init__(self, size: int, length: int = 10, classes: int = 3, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(size) % classes
        noise = torch.randint(0, 60, (size, length), generator=generator)
        topical = torch.randint(0, 20, (size, length), generator=generator) + 60 + 20 * self.labels[:, None]
        self.tokens = torch.where(torch.rand(size, length, generator=generator) < 0.6, topical, noise)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.tokens[index], int(self.labels[index])


class TextClassifier(Classifier):
    """Token ids -> embedding -> a small transformer encoder -> mean over tokens -> head."""

    def __init__(self, vocabulary: int = 120, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, classes)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


def test_a_text_transformer_on_token_ids_is_analysed_with_default_layers(tmp_path):
    data = Texts(90)
    visualizer = FeatureVisualizer(overhead=None, k=5, maps=MapOptions(dims=[2]))  # layers="auto"
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[visualizer])
    model = TextClassifier()
    with pytest.warns(UserWarning, match="tokens inputs"):
        trainer.fit(model, DataLoader(data, batch_size=15, shuffle=True), DataLoader(data, batch_size=15))
    layers = {row["layer"] for row in visualizer.history}
    assert "input" in layers and "encoder" in layers
    # The input is a bag of tokens. Its distances tie often (counts of 10 tokens), where scikit-learn breaks
    # ties its own way: the bags are checked against the same search on bags built here by hand.
    bags = torch.stack([torch.bincount(t % 256, minlength=256).float() / len(t) for t in data.tokens])
    expected = neighbour_stats(bags, data.labels, k=5, num_classes=3).mean_purity
    assert trainer.callback_metrics["featviz/knn_purity@5/input"].item() == pytest.approx(expected, abs=1e-6)
    model.eval()
    with torch.no_grad():
        encoded = model.encoder(model.embed(data.tokens)).mean(dim=1)
    expected = sklearn_purity(encoded.numpy(), data.labels.numpy(), k=5)
    assert trainer.callback_metrics["featviz/knn_purity@5/encoder"].item() == pytest.approx(expected, abs=1e-6)
    assert glob.glob(f"{trainer.log_dir}/featviz_wrong_cluster/*.csv")


class FunctionalHead(nn.Module):
    """An MLP whose head reads ``F.relu(self.hidden(x))``: the ReLU is a function, not a module."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(12, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def test_a_head_reading_a_function_of_a_layer_gets_that_layer_through_the_function_unless_a_reduction_is_given():
    """Why: an MLP written with ``F.relu`` fell back to ``hidden`` before the ReLU, a vector its head never reads,
    silently (the warning is for timm / HF models). The probe finds the ReLU; a reduction the user gives wins."""
    from lightning_featviz.capture.default_layers import default_layers

    torch.manual_seed(0)
    model, x = FunctionalHead().eval(), torch.randn(6, 12)
    found = default_layers(model, x)
    assert list(found.layers) == ["input", "hidden"] and found.activations == {"hidden": "relu"}
    for given, expected in ((None, F.relu(model.hidden(x))), ({"hidden": "flatten"}, model.hidden(x))):
        run = FeatureVisualizer(overhead=None)._run  # the callback's capture
        run.use(model, {"hidden": "hidden"}, given or "avg", found.identified, found.activations)
        assert run.hooks is not None
        with run.hooks.attach(), torch.no_grad():
            model(x)
        torch.testing.assert_close(run.hooks.pop()["hidden"], expected.detach())
