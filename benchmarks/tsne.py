"""Time of this project's 2-D t-SNE map (cold and warm-started) against scikit-learn's TSNE and
plain openTSNE with its defaults, in the same run, with the trustworthiness of each map.

Data: 512-dimensional vectors in 10 Gaussian clusters (a stand-in for a trained layer's
features; nothing is downloaded). Two warm starts, as the callback makes them: one more epoch of a
model that has nearly stopped changing (the same points slightly perturbed, from the cold map: the
map only settles), and an epoch in which the layer learned (from the map of the same points before
it did, with clusters drowned in noise: the map reorganises), each with the trustworthiness of a
cold fit of the same vectors beside it.

Targets (issue 3), at both sizes: cold >= 2x faster than scikit-learn with trustworthiness no worse than 0.01
below it; warm-started >= 2x faster than cold.

    python benchmarks/tsne.py [--sizes 3500 10000] [--skip-sklearn] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from sklearn.datasets import make_blobs

from lightning_featviz.analysis.tsne import trustworthiness, tsne_map


def timed(repeats, fn, *args, **kwargs):
    """The fastest of ``repeats`` calls (the machine is noisy), and the result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = np.asarray(fn(*args, **kwargs))
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3500, 10000])
    parser.add_argument("--skip-sklearn", action="store_true", help="leave out scikit-learn (slow at 10,000)")
    parser.add_argument("--repeats", type=int, default=2, help="each method's time is the fastest of this many")
    args = parser.parse_args()
    jobs = os.cpu_count() or 1
    print(f"{'points':>7} {'method':<26}{'seconds':>9}{'trust@10':>10}{'speed-up vs sklearn':>21}")
    for n in args.sizes:
        vectors, _ = make_blobs(n_samples=n, n_features=512, centers=10, cluster_std=6.0, random_state=0)
        vectors = vectors.astype(np.float32)
        nudged = vectors + np.random.default_rng(1).normal(0, 0.3, vectors.shape).astype(np.float32)
        untrained = vectors + np.random.default_rng(2).normal(0, 12.0, vectors.shape).astype(np.float32)
        rows = []
        if not args.skip_sklearn:
            from sklearn.manifold import TSNE

            sklearn = TSNE(random_state=0, n_jobs=jobs)
            rows.append(("scikit-learn TSNE", *timed(args.repeats, sklearn.fit_transform, vectors)))
        from openTSNE import TSNE as OpenTSNE

        rows.append(("openTSNE defaults", *timed(args.repeats, OpenTSNE(n_jobs=jobs, random_state=0).fit, vectors)))
        cold_time, cold = timed(args.repeats, tsne_map, vectors, 2, seed=0, n_jobs=jobs)
        rows.append(("featviz cold", cold_time, cold))
        settled = timed(args.repeats, tsne_map, nudged, 2, seed=0, init=cold, n_jobs=jobs, reorganise=False)
        rows.append(("featviz warm, settling", *settled))
        before = tsne_map(untrained, 2, seed=0, n_jobs=jobs)
        rows.append(
            ("featviz warm, reorganising", *timed(args.repeats, tsne_map, vectors, 2, seed=0, init=before, n_jobs=jobs))
        )
        reference = rows[0][1] if not args.skip_sklearn else None
        for name, seconds, points in rows:
            trust = trustworthiness(nudged if "settling" in name else vectors, points)
            ratio = f"{reference / seconds:.2f}x" if reference else "-"
            print(f"{n:>7} {name:<26}{seconds:>9.1f}{trust:>10.4f}{ratio:>21}", flush=True)
        nudged_cold = trustworthiness(nudged, tsne_map(nudged, 2, seed=0, n_jobs=jobs))
        print(f"{n:>7} (a cold fit of the perturbed points: trust@10 {nudged_cold:.4f})")
        speed = f"{cold_time / settled[0]:.2f}x settling, {cold_time / rows[-1][1]:.2f}x reorganising"
        print(f"{n:>7} warm over cold: {speed}")


if __name__ == "__main__":
    main()
