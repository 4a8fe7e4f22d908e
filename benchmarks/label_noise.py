"""Finding injected label errors: this project's label-issue ranking against cleanlab, in one run.

Every method ranks the same samples of the same model; the injected flips are the truth. Measures:
average precision of the full ranking (AP; a random ranking scores the error rate), precision at n
(n = the number of injected errors), and the flagged set's size, precision and recall (ours: samples
whose suggested label is not the given one; cleanlab: what ``find_label_issues`` returns).

Methods:
- **featviz**: :func:`lightning_featviz.analysis.label_issues.find_label_issues` on one layer's vectors and the
  model's softmax (neighbourhood × model; in-sample probabilities tempered, as the callback scores training
  samples), with its class-noise step (:func:`lightning_featviz.analysis.label_issues.noise_matrix`);
  **featviz, no class-noise step**: the product alone (``class_noise=False``, the scorer before it);
  **featviz neighbours**: the same as featviz without probabilities.
- **model probability**: the softmax probability of the given label, ascending (for reference).
- **cleanlab find_label_issues**: ``cleanlab.filter.find_label_issues`` on the softmax, ranked by
  self-confidence; the samples it does not flag follow, by ``get_label_quality_scores``.
- **cleanlab Datalab**: ``Datalab.find_issues`` with the layer's features (and the softmax), ranked by
  its ``label_score``.

Audits:
(a) validation: the shared CIFAR-10 JPEGs (``../shared/data/cifar10-test-200``, 2,000 photos) through the
    shared trained ResNet-20 (``../shared/data/resnet20-cifar10``); labels flipped at random (5 %, 20 %)
    and a class pair swapped (30 % of cats labelled dog and of dogs labelled cat). Skipped without ``../shared``.
(b) training: 1,000 of the built-in digits (``ColouredDigits("val", image_size=16)``, used as a training
    set) with 20 % of labels flipped at random; a small CNN trained on them until its accuracy on the noisy
    labels is >= 99 %; its in-sample softmax and features score the same samples.

Targets (issue 17): (a) featviz AP >= cleanlab find_label_issues' AP at every setting; (b) >= 1.2x it.

This scores one snapshot of a trained model. The fine-tuning runs of issue 25 (noise injected before training,
every epoch recorded: the dynamics list, the last-epoch list and cleanlab on the last and the epoch-averaged
softmax, three seeds) are ``benchmarks/label_noise_dynamics.py``.

Over 300 lines (one run, one table): the two audits' models (a ResNet-20 to load the shared weights, a small CNN to
memorise the digits), every method scored on the same outputs and the printed table share one set of measures.

    pip install -e .[bench]
    python benchmarks/label_noise.py [--shared ../shared] [--seed 0] [--draws 5]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch import nn

from lightning_featviz.analysis.label_issues import (
    DEFAULT_MODEL_WEIGHT,
    IN_SAMPLE_MODEL_WEIGHT,
    LabelIssueOptions,
    find_label_issues,
)
from lightning_featviz.demo.datasets import ColouredDigits

NUM_CLASSES = 10
CIFAR_MEAN, CIFAR_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- models


class BasicBlock(nn.Module):
    """ResNet-20's block: conv-BN-ReLU-conv-BN plus a parameter-free shortcut (subsample, zero-pad channels)."""

    def __init__(self, inputs: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or inputs != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class ResNet20(nn.Module):
    """The CIFAR ResNet-20 of the shared weights (see their README): returns logits and the pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, 1)
        self.layer2 = self._stage(16, 32, 2)
        self.layer3 = self._stage(32, 64, 2)
        self.linear = nn.Linear(64, NUM_CLASSES)

    @staticmethod
    def _stage(inputs: int, planes: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(inputs, planes, stride), BasicBlock(planes, planes, 1), BasicBlock(planes, planes, 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        pooled = x.mean(dim=(2, 3))  # "avgpool"
        return self.linear(pooled), pooled


class DigitNet(nn.Module):
    """A small CNN for 16x16 digits: returns logits and its pooled last conv layer ("pool", 128 dims)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128)
        self.fc = nn.Linear(128, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        pooled = F.relu(self.bn3(self.conv3(x))).mean(dim=(2, 3))
        return self.fc(pooled), pooled


# ----------------------------------------------------------------------------- noise and methods


def flip_random(labels: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``rate`` of the labels, chosen at random, moved to another class chosen at random."""
    noisy = labels.copy()
    chosen = rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    noisy[chosen] = (labels[chosen] + rng.integers(1, NUM_CLASSES, len(chosen))) % NUM_CLASSES
    return noisy


def swap_pair(labels: np.ndarray, first: int, second: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``rate`` of class ``first`` labelled ``second`` and of ``second`` labelled ``first``."""
    noisy = labels.copy()
    for source, target in ((first, second), (second, first)):
        members = np.flatnonzero(labels == source)
        noisy[rng.choice(members, int(round(rate * len(members))), replace=False)] = target
    return noisy


def cleanlab_ranking(noisy: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, flagged rows): flagged first in cleanlab's order, the rest by label quality."""
    from cleanlab.filter import find_label_issues as cleanlab_find
    from cleanlab.rank import get_label_quality_scores

    flagged = cleanlab_find(noisy, probabilities, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(noisy, probabilities)
    rest = np.setdiff1d(np.arange(len(noisy)), flagged)
    order = np.concatenate([flagged, rest[np.argsort(quality[rest], kind="stable")]])
    scores = np.empty(len(noisy))
    scores[order] = np.arange(len(noisy), 0, -1)
    return scores, flagged


def datalab_scores(noisy: np.ndarray, features: np.ndarray, probabilities: np.ndarray | None) -> np.ndarray:
    """1 - Datalab's label score (high: likely issue), from the features (and the softmax)."""
    from cleanlab import Datalab

    lab = Datalab(data={"label": noisy}, label_name="label", verbosity=0)
    lab.find_issues(features=features, pred_probs=probabilities, issue_types={"label": {}})
    return 1.0 - lab.get_issues("label")["label_score"].to_numpy()


def measures(is_error: np.ndarray, scores: np.ndarray, flagged: np.ndarray | None) -> dict[str, float]:
    n = int(is_error.sum())
    top = np.argsort(-scores, kind="stable")[:n]
    row = {"ap": average_precision_score(is_error, scores), "p@n": float(is_error[top].mean())}
    if flagged is not None:
        row |= {
            "flagged": len(flagged),
            "precision": float(is_error[flagged].mean()) if len(flagged) else float("nan"),
            "recall": float(is_error[flagged].sum() / n),
        }
    return row


def audit(
    features: np.ndarray, probabilities: np.ndarray, noisy: np.ndarray, clean: np.ndarray, in_sample: bool = False
) -> dict[str, dict]:
    """Every method on one noisy labelling; method -> measures. ``in_sample``: the model trained on these
    labels (scored as the callback scores training samples)."""
    is_error = noisy != clean
    labels, vectors = torch.from_numpy(noisy), torch.from_numpy(features).float()
    model_weight = IN_SAMPLE_MODEL_WEIGHT if in_sample else DEFAULT_MODEL_WEIGHT
    probabilities_t = torch.from_numpy(probabilities).float()
    ours = find_label_issues(
        vectors, labels, NUM_CLASSES, probabilities_t, options=LabelIssueOptions(model_weight=model_weight)
    )
    product = find_label_issues(
        vectors,
        labels,
        NUM_CLASSES,
        probabilities_t,
        options=LabelIssueOptions(model_weight=model_weight, class_noise=False),
    )
    neighbours = find_label_issues(vectors, labels, NUM_CLASSES, None)
    ours_flagged = np.flatnonzero(ours.suggested.numpy() != noisy)
    neighbours_flagged = np.flatnonzero(neighbours.suggested.numpy() != noisy)
    clean_scores, clean_flagged = cleanlab_ranking(noisy, probabilities)
    given = probabilities[np.arange(len(noisy)), noisy]
    return {
        "featviz (neighbours x model)": measures(is_error, ours.scores.numpy(), ours_flagged),
        "featviz, no class-noise step": measures(
            is_error, product.scores.numpy(), np.flatnonzero(product.suggested.numpy() != noisy)
        ),
        "featviz neighbours only": measures(is_error, neighbours.scores.numpy(), neighbours_flagged),
        "model probability of the label": measures(is_error, -given, None),
        "cleanlab find_label_issues": measures(is_error, clean_scores, clean_flagged),
        "cleanlab Datalab (features)": measures(is_error, datalab_scores(noisy, features, None), None),
        "cleanlab Datalab (features + probabilities)": measures(
            is_error, datalab_scores(noisy, features, probabilities), None
        ),
    }


# ----------------------------------------------------------------------------- the two audits


def cifar_outputs(shared: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, 64), softmax (N, 10), labels (N,)) of the shared CIFAR-10 photos."""
    from torchvision import datasets, transforms

    model = ResNet20()
    weights = shared / "data" / "resnet20-cifar10" / "resnet20-12fca82f.th"
    state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({key.removeprefix("module."): value for key, value in state.items()})
    model.eval()
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    photos = datasets.ImageFolder(str(shared / "data" / "cifar10-test-200"), transform)
    images = torch.stack([photos[i][0] for i in range(len(photos))])
    with torch.no_grad():
        logits, features = model(images)
    return features.numpy(), logits.softmax(dim=1).numpy(), np.asarray(photos.targets)


def memorised_digits(seed: int, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Train :class:`DigitNet` on digits with ``rate`` flipped labels until >= 99 % training accuracy on
    them; returns (features, in-sample softmax, noisy labels, clean labels, epochs)."""
    data = ColouredDigits("val", image_size=16, seed=seed)
    images, clean = data.images, data.targets.numpy()
    noisy = flip_random(clean, rate, np.random.default_rng(seed))
    targets = torch.from_numpy(noisy)
    torch.manual_seed(seed)
    model = DigitNet()
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    epochs = 0
    while epochs < 300:
        epochs += 1
        model.train()
        for batch in torch.randperm(len(images)).split(50):
            loss = F.cross_entropy(model(images[batch])[0], targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            logits, features = model(images)
        if float((logits.argmax(dim=1) == targets).float().mean()) >= 0.99:
            break
    return features.numpy(), logits.softmax(dim=1).numpy(), noisy, clean, epochs


def print_table(title: str, results: dict[str, dict]) -> None:
    print(f"\n{title}\n")
    print("| method | AP | precision@n | flagged | precision | recall |")
    print("|---|---|---|---|---|---|")
    for method, row in results.items():
        flagged = (
            f"{row['flagged']} | {row['precision']:.2f} | {row['recall']:.2f}" if "flagged" in row else "— | — | —"
        )
        print(f"| {method} | {row['ap']:.3f} | {row['p@n']:.2f} | {flagged} |")


def draws(features: np.ndarray, probabilities: np.ndarray, clean: np.ndarray, count: int) -> None:
    """(a) over ``count`` noise draws: AP (mean ± standard deviation) of the list, the list with the neighbour
    vote's k a fifth of the median class (the rule before issue 25's second round), the model's probability of
    the label and cleanlab's find_label_issues."""
    from cleanlab.rank import get_label_quality_scores

    vectors, probabilities_t = torch.from_numpy(features).float(), torch.from_numpy(probabilities).float()
    fifth = min(50, max(5, int(np.median(np.bincount(clean))) // 5))
    rows: dict[tuple[str, str], list[float]] = {}
    for seed in range(count):
        rng = np.random.default_rng(seed)
        settings = {
            "random flips 5%": flip_random(clean, 0.05, rng),
            "random flips 20%": flip_random(clean, 0.20, rng),
            "cat<->dog swap 30%": swap_pair(clean, 3, 5, 0.30, rng),
        }
        for name, noisy in settings.items():
            is_error, labels = noisy != clean, torch.from_numpy(noisy)
            scores = {
                "featviz (neighbours x model)": find_label_issues(vectors, labels, NUM_CLASSES, probabilities_t).scores,
                f"featviz, k = {fifth} (a fifth of the median class)": find_label_issues(
                    vectors, labels, NUM_CLASSES, probabilities_t, options=LabelIssueOptions(k=fifth)
                ).scores,
                "model probability of the label": -get_label_quality_scores(noisy, probabilities),
                "cleanlab find_label_issues": cleanlab_ranking(noisy, probabilities)[0],
            }
            for method, score in scores.items():
                rows.setdefault((name, method), []).append(average_precision_score(is_error, np.asarray(score)))
    print(f"\n(a) over {count} noise draws (seeds 0-{count - 1}), AP mean ± standard deviation\n")
    print("| setting | method | AP |\n|---|---|---|")
    for (name, method), values in rows.items():
        print(f"| {name} | {method} | {np.mean(values):.3f} ± {np.std(values):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--draws", type=int, default=0, help="(a) again over this many noise draws (seeds 0..N-1): AP mean and spread"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="cleanlab")
    torch.set_num_threads(2)
    targets: list[tuple[str, float, float, float]] = []
    start = time.perf_counter()

    if (args.shared / "data" / "cifar10-test-200").is_dir():
        features, probabilities, clean = cifar_outputs(args.shared)
        accuracy = float((probabilities.argmax(1) == clean).mean())
        rng = np.random.default_rng(args.seed)
        settings = {
            "random flips 5%": flip_random(clean, 0.05, rng),
            "random flips 20%": flip_random(clean, 0.20, rng),
            "cat<->dog swap 30%": swap_pair(clean, 3, 5, 0.30, rng),
        }
        for name, noisy in settings.items():
            results = audit(features, probabilities, noisy, clean)
            errors = int((noisy != clean).sum())
            print_table(
                f"(a) validation audit, CIFAR-10 photos + ResNet-20 (accuracy {accuracy:.2f}), avgpool, {name}: "
                f"{errors} of {len(clean)} labels wrong",
                results,
            )
            ours, theirs = results["featviz (neighbours x model)"]["ap"], results["cleanlab find_label_issues"]["ap"]
            targets.append((f"(a) {name}: AP >= cleanlab's", ours, theirs, 1.0))
        if args.draws:
            draws(features, probabilities, clean, args.draws)
    else:
        print(f"(a) skipped: no shared data at {args.shared}")

    features, probabilities, noisy, clean, epochs = memorised_digits(args.seed, 0.20)
    memorised = float((probabilities.argmax(1) == noisy).mean())
    results = audit(features, probabilities, noisy, clean, in_sample=True)
    print_table(
        f"(b) training audit, digits with 20% flipped labels, DigitNet trained {epochs} epochs to {memorised:.3f} "
        f"accuracy on the noisy labels, pool layer, in-sample probabilities: {int((noisy != clean).sum())} of "
        f"{len(clean)} labels wrong",
        results,
    )
    ours, theirs = results["featviz (neighbours x model)"]["ap"], results["cleanlab find_label_issues"]["ap"]
    targets.append(("(b) training audit: AP >= 1.2x cleanlab's", ours, theirs, 1.2))

    print("\nTargets (issue 17):")
    for name, ours, theirs, factor in targets:
        verdict = "met" if ours >= factor * theirs else "NOT met"
        print(f"- {name}: {ours:.3f} vs {theirs:.3f} ({ours / theirs:.2f}x) -> {verdict}")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
