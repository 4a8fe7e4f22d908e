"""HF transformers conformance: image and text classifiers from tiny configs (no download), called the way HF users
call them — a LightningModule-like ``forward(batch)`` with dict batches, padded text of varying length. Every default
layer's vector equals a reference built from ``output_hidden_states=True`` and the model's own pooling, and
``layers="auto"`` finds the encoder stages."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from pooling_data import (
    IMAGE,
    SMALL,
    TEXT,
    ForwardBatch,
    coloured_squares,
    fit_six_epochs,
    image_batch,
    sklearn_purity,
    text_batch,
)
from torch import Tensor, nn

from lightning_featviz.capture.default_layers import default_layers
from lightning_featviz.capture.hooks import ActivationCapture

transformers = pytest.importorskip("transformers")


def _cls(hidden: Tensor) -> Tensor:
    return hidden[:, 0]


def _patch_mean(hidden: Tensor) -> Tensor:
    return hidden[:, 1:].mean(dim=1)


def _cls_and_patch_mean(hidden: Tensor) -> Tensor:  # DINOv2's head: (B, 2C)
    return torch.cat([hidden[:, 0], hidden[:, 1:].mean(dim=1)], dim=1)


def _vision(config: Any) -> Any:  # a CLIP / SigLIP config holding a tiny vision tower (its text tower is not built)
    return config(vision_config={**SMALL, "image_size": 16, "patch_size": 4}, text_config=SMALL, num_labels=3)


#: name -> (model builder, batch builder, pooling of an encoder layer's hidden state, pre-logits reference)
Reference = Callable[[Any, Any], Tensor]
MODELS: dict[
    str, tuple[Callable[[], nn.Module], Callable[[], dict[str, Tensor]], Callable[[Tensor], Tensor], Reference]
] = {
    "vit": (
        lambda: transformers.ViTForImageClassification(transformers.ViTConfig(**IMAGE)),
        image_batch,
        _cls,
        lambda model, out: model.vit.layernorm(out.hidden_states[-1])[:, 0],
    ),
    "deit": (
        lambda: transformers.DeiTForImageClassification(transformers.DeiTConfig(**IMAGE)),
        image_batch,
        _cls,
        lambda model, out: model.deit.layernorm(out.hidden_states[-1])[:, 0],
    ),
    "beit": (
        lambda: transformers.BeitForImageClassification(transformers.BeitConfig(**IMAGE, use_mean_pooling=True)),
        image_batch,
        _patch_mean,
        lambda model, out: model.beit.pooler.layernorm(out.hidden_states[-1][:, 1:].mean(dim=1)),
    ),
    "dinov2": (
        lambda: transformers.Dinov2ForImageClassification(transformers.Dinov2Config(**IMAGE)),
        image_batch,
        _cls_and_patch_mean,
        lambda model, out: _cls_and_patch_mean(model.dinov2.layernorm(out.hidden_states[-1])),
    ),
    "clip": (
        lambda: transformers.CLIPForImageClassification(_vision(transformers.CLIPConfig)),
        image_batch,
        _patch_mean,
        lambda model, out: out.hidden_states[-1][:, 1:].mean(dim=1),  # the encoder's output, no post-layernorm
    ),
    "siglip": (
        lambda: transformers.SiglipForImageClassification(_vision(transformers.SiglipConfig)),
        image_batch,
        lambda hidden: hidden.mean(dim=1),  # no class token
        lambda model, out: model.vision_model.post_layernorm(out.hidden_states[-1]).mean(dim=1),
    ),
    "bert": (
        lambda: transformers.BertForSequenceClassification(transformers.BertConfig(**TEXT)),
        text_batch,
        _cls,
        lambda model, out: model.bert.pooler(out.hidden_states[-1]),
    ),
    "distilbert": (
        lambda: transformers.DistilBertForSequenceClassification(
            transformers.DistilBertConfig(vocab_size=60, dim=16, n_layers=2, n_heads=2, hidden_dim=32, num_labels=3)
        ),
        text_batch,
        _cls,
        lambda model, out: torch.relu(model.pre_classifier(out.hidden_states[-1][:, 0])),
    ),
    "electra": (
        lambda: transformers.ElectraForSequenceClassification(transformers.ElectraConfig(**TEXT, embedding_size=16)),
        text_batch,
        _cls,
        lambda model, out: model.classifier.activation(model.classifier.dense(out.hidden_states[-1][:, 0])),
    ),
    "deberta_v2": (
        lambda: transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(**TEXT)),
        text_batch,
        _cls,
        lambda model, out: model.pooler(out.hidden_states[-1]),
    ),
}


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[nn.Module, dict[str, Tensor]]]:
    torch.manual_seed(0)
    return {name: (ForwardBatch(build().eval()), batch()) for name, (build, batch, _, _) in MODELS.items()}


def _run(wrapper: nn.Module, batch: dict[str, Tensor], layers: list[str]) -> dict[str, Tensor]:
    capture = ActivationCapture(wrapper, layers, batch_size=4)
    capture.attention_mask = batch.get("attention_mask")
    with capture.attach(), torch.no_grad():
        wrapper(batch)
    return capture.pop()


@pytest.mark.parametrize("name", list(MODELS))
def test_every_default_layer_equals_the_models_own_pooling_of_its_hidden_states(name: str, built: Any) -> None:
    wrapper, batch = built[name]
    _, _, pool, pre_logits = MODELS[name]
    found = default_layers(wrapper, batch, batch_size=4, mask=batch.get("attention_mask"))
    layers = [path for path in found.layers if path != "input"]
    encoder = [path for path in layers if path.rsplit(".", 1)[-1].isdigit()]
    assert len(encoder) == 2 and encoder[0].endswith(".0") and encoder[1].endswith(".1"), layers  # the stages
    vectors = _run(wrapper, batch, layers)
    model = wrapper.model
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)
        for i, path in enumerate(encoder):
            torch.testing.assert_close(vectors[path], pool(out.hidden_states[i + 1]), rtol=1e-5, atol=1e-5)
        reference = pre_logits(model, out)
    torch.testing.assert_close(vectors[layers[-1]], reference, rtol=1e-5, atol=1e-5, msg=str(layers))
    assert layers[-1] != "model.classifier"  # never the logits


def test_hf_vit_gives_one_answer_with_or_without_a_batch_size(built: Any) -> None:
    """Why: `ActivationCapture` without a batch size gave the class token of `vit.layernorm`, the callback the mean."""
    wrapper, batch = built["vit"]
    layers = ["model.vit.layernorm", "model.vit.layers.1"]
    unsized = ActivationCapture(wrapper, layers)
    with unsized.attach(), torch.no_grad():
        wrapper(batch)
    plain = unsized.pop()
    sized = _run(wrapper, batch, layers)
    for layer in layers:
        torch.testing.assert_close(plain[layer], sized[layer])
    with torch.no_grad():
        tokens = wrapper.model.vit(pixel_values=batch["pixel_values"]).last_hidden_state
    torch.testing.assert_close(sized["model.vit.layernorm"], tokens[:, 0])


def test_siglip2_padded_patches_are_averaged_as_its_head_averages_them() -> None:
    """Why: SigLIP 2's head averages the patches its `pixel_attention_mask` keeps; without that mask every layer
    counted the padding and the pooled layer fell back with a warning. A batch with two padded images: the mask is
    read from the dict, and the blocks and the pooled layer equal the model's own masked means."""
    from lightning_featviz.capture.batches import attention_mask_of

    torch.manual_seed(0)
    config = transformers.Siglip2Config(vision_config={**SMALL, "patch_size": 4, "num_patches": 16}, text_config={})
    config.num_labels = 3
    wrapper = ForwardBatch(transformers.Siglip2ForImageClassification(config).eval())
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[1, 10:], mask[2, 6:] = 0, 0
    batch = {
        "pixel_values": torch.rand(4, 16, 3 * 4 * 4),
        "pixel_attention_mask": mask,
        "spatial_shapes": torch.tensor([[4, 4]] * 4),
        "labels": torch.tensor([0, 1, 2, 0]),
    }
    read = attention_mask_of(batch)
    assert read is mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        found = default_layers(wrapper, batch, batch_size=4, mask=read)
    layers = [path for path in found.layers if path != "input"]
    assert layers[-1] == "model.vision_model.post_layernorm", layers
    capture = ActivationCapture(wrapper, layers, batch_size=4)
    capture.attention_mask = read
    head: dict[str, Tensor] = {}
    hook = wrapper.model.classifier.register_forward_pre_hook(lambda module, args: head.setdefault("in", args[0]))
    with capture.attach(), torch.no_grad():
        wrapper(batch)
        hidden = wrapper.model.vision_model(
            pixel_values=batch["pixel_values"], pixel_attention_mask=mask, spatial_shapes=batch["spatial_shapes"],
            output_hidden_states=True,
        ).hidden_states  # fmt: skip
    hook.remove()
    vectors, keep = capture.pop(), mask[..., None].float()
    torch.testing.assert_close(vectors[layers[-1]], head["in"], rtol=1e-5, atol=1e-5)
    for i, path in enumerate(layers[:-1]):
        masked_mean = (hidden[i + 1] * keep).sum(dim=1) / keep.sum(dim=1)
        torch.testing.assert_close(vectors[path], masked_mean, rtol=1e-5, atol=1e-5, msg=path)


def test_hf_patch_embeddings_are_averaged_not_read_at_token_0(built: Any) -> None:
    """Why: token 0 of `patch_embeddings` is the top-left patch, not a class token."""
    wrapper, batch = built["vit"]
    path = "model.vit.embeddings.patch_embeddings"
    raw: dict[str, Tensor] = {}
    handle = wrapper.get_submodule(path).register_forward_hook(lambda m, a, out: raw.setdefault("out", out))
    vectors = _run(wrapper, batch, [path])[path]
    handle.remove()
    assert raw["out"].shape[1] == 16  # a 4 x 4 grid of patches, no class token
    torch.testing.assert_close(vectors, raw["out"].mean(dim=1))


def test_padded_text_token_means_and_the_input_bag_count_real_tokens_only(built: Any) -> None:
    """Why: token means and the `input` bag of tokens counted padding (BERT, dict batches with `attention_mask`)."""
    from lightning_featviz.capture.inputs import reduce_input

    wrapper, batch = built["bert"]
    path, mask = "model.bert.encoder.layer.1", batch["attention_mask"]
    capture = ActivationCapture(wrapper, [path], reduction={path: "mean"}, batch_size=4)
    capture.attention_mask = mask
    with capture.attach(), torch.no_grad():
        wrapper(batch)
    vectors = capture.pop()[path]
    with torch.no_grad():
        hidden = wrapper.model(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
    for row, length in enumerate(mask.sum(dim=1).tolist()):
        torch.testing.assert_close(vectors[row], hidden.hidden_states[2][row, :length].mean(dim=0))
    bags = reduce_input(batch["input_ids"], "tokens", 8, mask)
    for row, length in enumerate(mask.sum(dim=1).tolist()):
        torch.testing.assert_close(bags[row], reduce_input(batch["input_ids"][row : row + 1, :length], "tokens", 8)[0])
    fixed = torch.zeros(4, 32, dtype=torch.long)  # padded to a fixed length: the bag stays finite
    fixed_mask = torch.zeros(4, 32, dtype=torch.long)
    fixed[:, :9], fixed_mask[:, :9] = batch["input_ids"], mask
    torch.testing.assert_close(reduce_input(fixed, "tokens", 8, fixed_mask), bags)


def test_a_trained_hf_vit_logs_the_purity_of_the_feature_its_head_reads(tmp_path: Any) -> None:
    """Why: a trained HF ViT logged 0.83 for `vit.layernorm` (mean of tokens) where its head's class token gives
    1.00; "auto" with dict batches found only `input`. Here: `forward(batch)`, dict batches, `layers="auto"`."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    class HFClassifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = transformers.ViTForImageClassification(transformers.ViTConfig(**IMAGE))

        def forward(self, batch: dict[str, Tensor]) -> Tensor:
            return self.model(pixel_values=batch["pixel_values"]).logits

        def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
            return self.model(**batch).loss

        def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
            self.log("val_acc", (self(batch).argmax(1) == batch["labels"]).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    pl.seed_everything(0, verbose=False)
    module, val = HFClassifier(), coloured_squares(60, seed=1)
    trainer, visualizer = fit_six_epochs(
        tmp_path, module, DataLoader(coloured_squares(150, seed=0), batch_size=15, shuffle=True), DataLoader(val, 20)
    )
    layers = list(visualizer._run.paths.values())
    assert layers[-1] == "vit.layernorm" and "vit.layers.0" in layers, layers
    assert trainer.callback_metrics["val_acc"].item() > 0.9  # trained: the class token and the mean differ
    module.eval()
    with torch.no_grad():
        images = torch.stack([sample["pixel_values"] for sample in val])
        pooled = module.model.vit(pixel_values=images).last_hidden_state[:, 0]
    labels = torch.stack([sample["labels"] for sample in val]).numpy()
    expected = sklearn_purity(pooled.numpy(), labels, k=5)
    logged = trainer.callback_metrics["featviz/knn_purity@5/vit.layernorm"].item()
    assert logged == pytest.approx(expected, abs=1e-6)


def test_posthoc_analyse_of_an_hf_model_reads_its_logits_and_the_heads_feature(tmp_path: Any, built: Any) -> None:
    """Why: `posthoc.analyse` on an HF model failed with `AttributeError: ... 'argmax'`. The same layer gives the
    same vector in the callback, `posthoc.analyse` and `ActivationCapture`: the class token after the layernorm."""
    from lightning_featviz.posthoc import analyse

    model = built["vit"][0].model
    samples = coloured_squares(30, seed=3)
    data = [(sample["pixel_values"], int(sample["labels"])) for sample in samples]
    result = analyse(
        model, data, tmp_path, layers=["vit.layernorm"], batch_size=10, k=5, progress=False, accelerator="cpu",
        maps=False, projector=False, wrong_cluster=False, dashboard=False,
    )  # fmt: skip
    with torch.no_grad():
        pooled = model.vit(pixel_values=torch.stack([image for image, _ in data])).last_hidden_state[:, 0]
    expected = sklearn_purity(pooled.numpy(), torch.tensor([label for _, label in data]).numpy(), k=5)
    assert result.history[-1]["knn_purity"] == pytest.approx(expected, abs=1e-6)


def test_padded_text_through_the_callback_counts_real_tokens_only(tmp_path: Any) -> None:
    """Why: with dict batches of padded text, the `input` bag and token means counted the padding. Through a
    Trainer: the logged purity of `input` and of a token mean equal scikit-learn on the masked references."""
    import pytorch_lightning as pl
    from pooling_data import bank_spy, text_module, text_samples
    from torch.utils.data import DataLoader

    from lightning_featviz import CaptureOptions
    from lightning_featviz.capture.inputs import reduce_input

    samples = text_samples(60)
    pl.seed_everything(0, verbose=False)
    module = text_module(transformers.BertForSequenceClassification(transformers.BertConfig(**TEXT)))
    layer = "model.bert.encoder.layer.1"
    visualizer = bank_spy(
        ["input", layer], k=5, overhead=None, maps=False, projector=False, wrong_cluster=False, dashboard=False,
        capture=CaptureOptions(reduction={layer: "mean"}, input_size=6),
    )  # fmt: skip
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1, callbacks=[visualizer],
    )  # fmt: skip
    trainer.fit(module, DataLoader(samples, batch_size=15), DataLoader(samples, batch_size=20))
    ids = torch.stack([s["input_ids"] for s in samples])
    mask, labels = ids != 0, torch.stack([s["labels"] for s in samples]).numpy()
    module.eval()
    with torch.no_grad():
        hidden = module.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states[2]
    rows = visualizer.bank.indices.long()
    means = torch.stack([hidden[i, mask[i]].mean(dim=0) for i in range(len(ids))])
    bags = torch.cat([reduce_input(ids[i : i + 1, : int(mask[i].sum())], "tokens", 6) for i in range(len(ids))])
    torch.testing.assert_close(visualizer.bank.vectors["input"].float(), bags[rows])
    torch.testing.assert_close(visualizer.bank.vectors[layer].float(), means[rows])
    logged = trainer.callback_metrics[f"featviz/knn_purity@5/{layer}"].item()
    assert logged == pytest.approx(sklearn_purity(means.numpy(), labels, 5), abs=1e-6)
