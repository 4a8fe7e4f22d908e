"""How far the photos' validation settings of ``label_noise_dynamics.py`` can go: the same noise on the same
validation halves, ranked by a much better model of the same photos.

The dynamics benchmark's photo runs train a fresh head on 1,000 photos; here the shared ResNet-20's *own* head,
trained by its authors on CIFAR-10's 50,000 clean training images, scores the other 1,000 (the very halves and
flips of each seed, made by ``label_noise_dynamics.settings_of``). Its self-confidence, and cleanlab's best
ranking on its softmax, say what a ranking from a far better-trained classifier of these photos reaches: where
it stays below issue 25's target of 1.1x the fresh head's best, no ranking from the fresh head's run should be
expected to reach it.

    python benchmarks/label_noise_ceiling.py        # needs ../shared (the photos and the ResNet-20); ~30 s
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_noise import cifar_outputs  # noqa: E402
from label_noise_dynamics import cifar_split, cleanlab_rankings, measure, settings_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    _, probabilities, labels = cifar_outputs(args.shared)  # the ResNet-20's own head on the 2,000 photos
    print(f"the ResNet-20's own head: accuracy {np.mean(probabilities.argmax(1) == labels):.3f} on the 2,000 photos")
    results: dict[str, dict[str, list[float]]] = {}
    for seed in args.seeds:
        train_rows, val_rows = cifar_split(labels, seed)
        run = SimpleNamespace(val_features=None, val_probabilities=probabilities[val_rows][None], train_features=None)
        run.train_probabilities = run.train_logits = None

        def runs_for(noisy, run=run):  # the fresh head's runs are not needed: only the noise they draw
            return dict.fromkeys(noisy, run)

        for name, _, probs, noisy, clean, in_sample, _ in settings_of(
            seed, runs_for, labels[train_rows], labels[val_rows]
        ):
            if in_sample:
                continue
            softmax = probs[-1]
            scores = {"own head: self-confidence": 1 - softmax[np.arange(len(noisy)), noisy]}
            scores |= cleanlab_rankings(noisy, softmax, "own head")
            table = results.setdefault(name, {})
            for method, ranking in scores.items():
                table.setdefault(method, []).append(measure(noisy != clean, ranking)[0])
    print(f"\nAverage precision, mean ± standard deviation over seeds {args.seeds}\n")
    print("| setting | own head: self-confidence | own head: cleanlab's best ranking |")
    print("|---|---|---|")
    for name, table in results.items():
        own = table.pop("own head: self-confidence")
        best = max(table, key=lambda method: np.mean(table[method]))
        print(
            f"| photos, {name} | {np.mean(own):.3f} ± {np.std(own):.3f} | {np.mean(table[best]):.3f} ± "
            f"{np.std(table[best]):.3f} ({best.removeprefix('cleanlab ').removesuffix(' (own head)')}) |"
        )


if __name__ == "__main__":
    main()
