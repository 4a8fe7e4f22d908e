"""HF transformers heads that read something else than a ViT's or BERT's token 0: decoders whose ``score`` reads
the last real token (GPT-2, Llama; right and left padding), hierarchical image models whose stages hold blocks
(Swin, ConvNeXt, ResNet: the stages are Swin's ``encoder.layers.N``, ConvNeXt's and ResNet's ``encoder.stages.N``,
not the blocks of one stage), and RoBERTa's head, whose input (``tanh`` of ``classifier.dense``) no module outputs:
the default pooled layer is ``classifier.dense`` through ``tanh``. The default pooled layer equals a reference
built from ``output_hidden_states=True`` and the model's documented pooling. Tiny random configs, each built once (no
download)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from pooling_data import TEXT, ForwardBatch, image_batch, text_batch
from torch import Tensor, nn

from lightning_featviz.capture.default_layers import default_layers
from lightning_featviz.capture.hooks import ActivationCapture

transformers = pytest.importorskip("transformers")

DECODER = {"vocab_size": 60, "num_labels": 3, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def left_padded_batch() -> dict[str, Tensor]:
    """``text_batch``'s sentences padded on the left, as decoder users often pad."""
    batch = text_batch()
    mask = batch["attention_mask"].flip(1)
    return {**batch, "input_ids": batch["input_ids"].flip(1) * mask, "attention_mask": mask}


def last_real(hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """(B, T, C) -> (B, C) as HF's sequence classifiers pick: the rightmost token that is not ``pad_token_id`` (0)."""
    real = (batch["input_ids"] != 0).int()
    return hidden[torch.arange(len(hidden)), (torch.arange(real.shape[1]) * real).argmax(dim=-1)]


#: name -> (model builder, batch builder, pre-logits reference (model, outputs, batch), expected default layers)
Reference = Callable[[Any, Any, dict[str, Tensor]], Tensor]
HEADS: dict[str, tuple[Callable[[], nn.Module], Callable[[], dict[str, Tensor]], Reference, list[str]]] = {
    "gpt2": (
        lambda: transformers.GPT2ForSequenceClassification(
            transformers.GPT2Config(n_positions=32, n_embd=16, n_layer=2, n_head=2, **DECODER)
        ),
        text_batch,
        lambda model, out, batch: last_real(out.hidden_states[-1], batch),  # the last hidden state is after ln_f
        ["transformer.h.0", "transformer.h.1", "transformer.ln_f"],
    ),
    "llama_left_padded": (
        lambda: transformers.LlamaForSequenceClassification(
            transformers.LlamaConfig(**{**TEXT, **DECODER}, num_key_value_heads=2)
        ),
        left_padded_batch,
        lambda model, out, batch: last_real(out.hidden_states[-1], batch),  # the last hidden state is after norm
        ["model.layers.0", "model.layers.1", "model.norm"],
    ),
    "swin": (
        lambda: transformers.SwinForImageClassification(
            transformers.SwinConfig(
                image_size=16, patch_size=2, embed_dim=8, depths=[1, 3], num_heads=[1, 1], window_size=2, num_labels=3
            )
        ),
        image_batch,
        lambda model, out, batch: model.swin.layernorm(out.hidden_states[-1]).mean(dim=1),
        ["swin.encoder.layers.0", "swin.encoder.layers.1", "swin.layernorm"],
    ),
    "convnext": (
        lambda: transformers.ConvNextForImageClassification(
            transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 3], num_labels=3)
        ),
        image_batch,
        lambda model, out, batch: model.convnext.layernorm(out.hidden_states[-1].mean(dim=(2, 3))),
        ["convnext.encoder.stages.0", "convnext.encoder.stages.1", "convnext.layernorm"],
    ),
    "resnet": (
        lambda: transformers.ResNetForImageClassification(
            transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 3], num_labels=3)
        ),
        image_batch,
        lambda model, out, batch: out.hidden_states[-1].mean(dim=(2, 3)),
        ["resnet.encoder.stages.0", "resnet.pooler"],  # stages.1 averaged *is* the pooler: left out
    ),
}


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[nn.Module, dict[str, Tensor]]]:
    torch.manual_seed(0)
    return {name: (ForwardBatch(build().eval()), batch()) for name, (build, batch, _, _) in HEADS.items()}


def _run(wrapper: nn.Module, batch: dict[str, Tensor], layers: list[str], **options: Any) -> dict[str, Tensor]:
    capture = ActivationCapture(wrapper, layers, batch_size=4, **options)
    capture.attention_mask = batch.get("attention_mask")
    with capture.attach(), torch.no_grad():
        wrapper(batch)
    return capture.pop()


def _outputs(wrapper: nn.Module, batch: dict[str, Tensor]) -> Any:
    with torch.no_grad():
        return wrapper.model(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)


@pytest.mark.parametrize("name", list(HEADS))
def test_the_default_pooled_layer_is_what_the_head_reads(name: str, built: Any) -> None:
    wrapper, batch = built[name]
    reference = HEADS[name][2]
    found = default_layers(wrapper, batch, batch_size=4, mask=batch.get("attention_mask"))
    layers = [path for path in found.layers if path != "input"]
    assert layers == [f"model.{path}" for path in HEADS[name][3]]
    with torch.no_grad():
        expected = reference(wrapper.model, _outputs(wrapper, batch), batch)
    torch.testing.assert_close(_run(wrapper, batch, layers[-1:])[layers[-1]], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "llama_left_padded"])
def test_every_decoder_block_is_read_at_the_last_real_token(name: str, built: Any) -> None:
    """Why: a decoder's blocks were read at token 0 (BERT's CLS): for a causal model, the first word alone."""
    wrapper, batch = built[name]
    blocks = [f"model.{path}" for path in HEADS[name][3][:-1]]  # the last default is the final norm
    outputs: dict[str, Tensor] = {}
    handles = [
        wrapper.get_submodule(path).register_forward_hook(
            lambda module, args, out, path=path: outputs.setdefault(path, out[0] if isinstance(out, tuple) else out)
        )
        for path in blocks
    ]
    try:
        _outputs(wrapper, batch)
    finally:
        for handle in handles:
            handle.remove()
    vectors = _run(wrapper, batch, blocks)
    assert len(blocks) == 2
    for path in blocks:
        torch.testing.assert_close(vectors[path], last_real(outputs[path], batch), msg=path)


def test_a_roberta_heads_tanh_is_applied_to_its_default_pooled_layer_and_logged_through_the_callback(
    tmp_path: Any,
) -> None:
    """Why: RoBERTa's head (also XLM-R, CamemBERT) reads ``tanh(classifier.dense(cls))``, a function no module
    outputs; the default pooled layer was ``classifier.dense`` before the tanh, with a warning and an override to
    write. Now the probe finds the tanh: no warning, ``featviz layers`` shows it, and through a Trainer the bank holds
    what the head reads and the logged purity equals scikit-learn's on it."""
    from pooling_data import fit_text_once, sklearn_purity, text_samples

    from lightning_featviz.capture.default_layers import describe_candidates

    torch.manual_seed(0)
    config = transformers.RobertaConfig(**TEXT, pad_token_id=0)
    wrapper, batch = ForwardBatch(transformers.RobertaForSequenceClassification(config).eval()), text_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = default_layers(wrapper, batch, batch_size=4, mask=batch["attention_mask"])
    assert list(found.layers)[-1] == "model.classifier.dense"
    assert found.activations == {"model.classifier.dense": "tanh"}
    line = next(line for line in describe_candidates(found) if " model.classifier.dense " in line)
    assert line.startswith("*") and " tanh " in line

    samples = text_samples(60)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*classifier head.*")
        build = lambda: transformers.RobertaForSequenceClassification(config)  # noqa: E731
        trainer, visualizer, module = fit_text_once(tmp_path, build, samples, train_batches=2)
    layer = list(visualizer._run.paths.values())[-1]
    assert layer.endswith("classifier.dense"), layer
    texts = {key: torch.stack([s[key] for s in samples]) for key in ("input_ids", "attention_mask")}
    head: dict[str, Tensor] = {}
    hook = module.model.classifier.out_proj.register_forward_pre_hook(lambda m, args: head.setdefault("in", args[0]))
    module.eval()
    with torch.no_grad():
        module.model(**texts)
    hook.remove()
    rows, labels = visualizer.bank.indices.long(), torch.stack([s["labels"] for s in samples]).numpy()
    torch.testing.assert_close(visualizer.bank.vectors[layer].float(), head["in"][rows])
    logged = trainer.callback_metrics[f"featviz/knn_purity@5/{layer}"].item()
    assert logged == pytest.approx(sklearn_purity(head["in"].numpy(), labels, 5), abs=1e-6)


def test_a_head_reading_what_nothing_reproduces_is_warned_with_the_fallback_and_the_override() -> None:
    """A RoBERTa whose head reads ``sigmoid(dense(cls))``: no module outputs it and no head activation of one
    reproduces it, so the probe warns, naming the layer it falls back to and the reduction to pass."""

    class SigmoidHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense, self.out_proj = nn.Linear(16, 16), nn.Linear(16, 3)

        def forward(self, features: Tensor, **kwargs: Any) -> Tensor:
            return self.out_proj(torch.sigmoid(self.dense(features[:, 0])))

    torch.manual_seed(0)
    model = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(**TEXT, pad_token_id=0))
    model.classifier = SigmoidHead()
    wrapper, batch = ForwardBatch(model.eval()), text_batch()
    expected = r"classifier head 'model\.classifier\.out_proj'.*functions, not modules.*reduction=\{'model\.classifier"
    with pytest.warns(UserWarning, match=expected):
        found = default_layers(wrapper, batch, batch_size=4, mask=batch["attention_mask"])
    assert list(found.layers)[-1] == "model.classifier.dense" and found.activations == {}


def test_a_decoder_through_the_callback_logs_the_purity_of_its_last_real_token(tmp_path: Any) -> None:
    """Why: `layers="auto"` on a GPT-2 classifier analysed its blocks at token 0. Through a Trainer with left-padded
    dict batches: the default layers end with `transformer.ln_f`, its bank holds the last real token of each
    sentence, and the logged purity equals scikit-learn's on it."""
    from pooling_data import fit_text_once, sklearn_purity, text_samples

    samples = text_samples(40, left_padded=True)
    config = transformers.GPT2Config(n_positions=32, n_embd=16, n_layer=2, n_head=2, **DECODER)
    build = lambda: transformers.GPT2ForSequenceClassification(config)  # noqa: E731
    trainer, visualizer, module = fit_text_once(tmp_path, build, samples, train_batches=1)
    layers = list(visualizer._run.paths.values())
    assert layers[-1] == "transformer.ln_f", layers  # display names: the shortest unique path ending
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("input_ids", "attention_mask")}
    module.eval()
    with torch.no_grad():
        expected = last_real(module.model(**batch, output_hidden_states=True).hidden_states[-1], batch)
    rows, labels = visualizer.bank.indices.long(), torch.stack([s["labels"] for s in samples]).numpy()
    torch.testing.assert_close(visualizer.bank.vectors[layers[-1]].float(), expected[rows])
    logged = trainer.callback_metrics[f"featviz/knn_purity@5/{layers[-1]}"].item()
    assert logged == pytest.approx(sklearn_purity(expected.numpy(), labels, 5), abs=1e-6)


def test_a_decoder_whose_pad_token_is_in_the_text_is_warned() -> None:
    """Why: HF's head reads the last token that is not `pad_token_id`; the layers read the last token the attention
    mask keeps. With GPT-2's usual `pad = eos` and a sentence ending with `eos`, they differ: a warning, not a
    silent wrong number."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_positions=32, n_embd=16, n_layer=2, n_head=2, **{**DECODER, "pad_token_id": 2})
    wrapper, batch = ForwardBatch(transformers.GPT2ForSequenceClassification(config).eval()), text_batch()
    ids = batch["input_ids"].clone()
    ids[batch["attention_mask"] == 0] = 2  # padded with eos
    ids[1, 4] = 2  # the second sentence ends with eos, a real token (its mask keeps it)
    with pytest.warns(UserWarning, match=r"'model\.score'.*not `pad_token_id`.*Hint: give the batches"):
        default_layers(wrapper, {**batch, "input_ids": ids}, batch_size=4, mask=batch["attention_mask"])
