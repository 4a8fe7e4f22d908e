"""Exact leave-one-out kNN: this project's ``knn_search`` against FAISS ``IndexFlatL2`` and
scikit-learn's brute-force ``NearestNeighbors``, in one run, with the machine's float32 matmul peak.

Rows: "default install" is ``knn_search`` as the README's ``pip install -e .`` runs it (FAISS is a
core dependency: ``knn_search`` runs FAISS on CPU tensors, its one CPU path); "torch path" is the chunked torch
search that ``knn_search`` runs on GPU tensors, run here on the CPU. Each method finds, for every one
of N vectors (D = 512, float32), its k = 10 nearest among the others: 2·N·N·D flops of distance products. The methods
run in turn, ``--repeats`` rounds, and each keeps its best time (noise hits all alike); GFLOP/s
counts those products only. Agreement: the share of rows whose neighbour sets equal FAISS's
(random Gaussian data has no exact ties). Printed: each row's time over FAISS's, and the
targets (issues 5 and 16): the default install's time <= 1.1x FAISS's, and >= 2x faster than
scikit-learn's.

Then a short fit's searches (a bank of 1,000 vectors of 16 and 32 dims, k = 11 leave-one-out and the label
issues' 49): ``knn_search`` against ``faiss.knn`` left to choose its own path, which below its threshold on
queries x dims computes one distance at a time instead of by matrix products.

    pip install -e .
    python benchmarks/knn.py [--sizes 10000 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

from lightning_featviz.analysis.knn import knn_search

K, D = 10, 512


def best_time(repeats: int, fn):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def matmul_peak(repeats: int) -> float:
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    torch.mm(a, b)  # warm-up
    seconds, _ = best_time(repeats + 1, lambda: torch.mm(a, b))
    return 2 * 4096**3 / seconds / 1e9


def featviz(x: np.ndarray) -> np.ndarray:
    vectors = torch.from_numpy(x)
    return knn_search(vectors, vectors, K, exclude_self=True)[1].numpy()


def torch_path(x: np.ndarray) -> np.ndarray:
    """The search ``knn_search`` runs on GPU tensors (chunked products, then the exact distances), on the CPU."""
    from lightning_featviz.analysis.knn import _exact_distances, _torch_search

    vectors = torch.from_numpy(x)
    return _exact_distances(vectors, vectors, _torch_search(vectors, vectors, K, torch.arange(len(x)), 1024))[1].numpy()


def faiss_flat(x: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, neighbours = index.search(x, K + 1)
    return _drop_self(neighbours)


def sklearn_brute(x: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    neighbours = NearestNeighbors(n_neighbors=K + 1, algorithm="brute", n_jobs=-1).fit(x).kneighbors(x)[1]
    return _drop_self(neighbours)


def _drop_self(neighbours: np.ndarray) -> np.ndarray:
    """Rows of K + 1 neighbours that include the query itself -> the K others."""
    rows = np.arange(len(neighbours))[:, None]
    others = neighbours != rows
    return np.stack([row[keep][:K] for row, keep in zip(neighbours, others, strict=True)])


DEFAULT = "default install"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = "FAISS"
    print(
        f"'{DEFAULT}': knn_search on CPU tensors (FAISS) as `pip install -e .` (README) installs it. "
        "'torch path': the search knn_search runs on GPU tensors, here on the CPU."
    )
    methods = {DEFAULT: featviz, "torch path": torch_path}
    try:
        import faiss  # noqa: F401

        methods["FAISS IndexFlatL2"] = faiss_flat
    except ImportError:
        print("faiss not importable: FAISS rows skipped (it is a core dependency: pip install -e .)")
    methods["sklearn brute"] = sklearn_brute
    peak = matmul_peak(args.repeats)
    print(f"threads: {torch.get_num_threads()}, float32 matmul peak (4096^3): {peak:.1f} GFLOP/s")
    print(f"{'N':>7} {'method':<22}{'seconds':>9}{'GFLOP/s':>9}{'% peak':>8}{'same as FAISS':>15}")
    summary = []
    for n in args.sizes:
        x = np.random.default_rng(0).standard_normal((n, D), dtype=np.float32)
        results: dict[str, tuple[float, np.ndarray]] = {}
        for _ in range(args.repeats):  # round-robin, so that a noisy moment does not hit one method only
            for name, fn in methods.items():
                seconds, neighbours = best_time(1, partial(fn, x))
                results[name] = (min(seconds, results.get(name, (seconds,))[0]), neighbours)
        reference = results.get("FAISS IndexFlatL2", (None, None))[1]
        for name, (seconds, neighbours) in results.items():
            gflops = 2 * n * n * D / seconds / 1e9
            same = "-" if reference is None else f"{_agreement(neighbours, reference):.4f}"
            print(f"{n:>7} {name:<22}{seconds:>9.2f}{gflops:>9.1f}{100 * gflops / peak:>7.0f}%{same:>15}", flush=True)
        times = {name: seconds for name, (seconds, _) in results.items()}
        line = [f"{n:>7} time over FAISS's:"]
        if "FAISS IndexFlatL2" in times:
            faiss_time = times["FAISS IndexFlatL2"]
            line += [f"{name} {times[name] / faiss_time:.2f}x" for name in (DEFAULT, "torch path", "sklearn brute")]
            summary.append((n, times[DEFAULT] / faiss_time))
        line.append(f"| sklearn's over {DEFAULT}'s: {times['sklearn brute'] / times[DEFAULT]:.2f}x")
        print(", ".join(line[:-1]).replace(":,", ":") + " " + line[-1], flush=True)
    for n, ratio in summary:
        verdict = "met" if ratio <= 1.1 else "NOT met"
        print(f"target: {DEFAULT} ({path}) <= 1.1x FAISS's time at N={n}: {ratio:.2f}x -> {verdict}")
    if "FAISS IndexFlatL2" in methods:
        small_banks(args.repeats)


def small_banks(repeats: int) -> None:
    """Milliseconds of ``faiss.knn`` on a short fit's searches, on the path ``knn_search`` makes it take (matrix
    products: threshold 0) and on the path FAISS chooses itself (one distance at a time below its threshold on
    queries x dims), round-robin, the best of ``repeats * 10`` calls each; then ``knn_search`` whole (the FAISS
    search, then the exact distances of the neighbours found)."""
    import faiss

    default = faiss.cvar.distance_compute_blas_threshold
    print(f"small banks: N = 1,000, ms per search (best of {repeats * 10}); FAISS's own threshold: {default}")
    for dims in (16, 32):
        x = np.random.default_rng(0).standard_normal((1000, dims), dtype=np.float32)
        vectors = torch.from_numpy(x)
        for k in (11, 49):
            best = {
                "faiss.knn, matrix products": float("inf"),
                "its own path": float("inf"),
                "knn_search": float("inf"),
            }
            for _ in range(repeats * 10):
                for name, threshold in zip(best, (0, default, default), strict=True):
                    faiss.cvar.distance_compute_blas_threshold = threshold
                    if name == "knn_search":
                        call = partial(knn_search, vectors, vectors, k, exclude_self=True)
                    else:
                        call = partial(faiss.knn, x, x, k + 1)
                    best[name] = min(best[name], best_time(1, call)[0])
            faiss.cvar.distance_compute_blas_threshold = default
            words = ", ".join(f"{name} {seconds * 1000:.2f}" for name, seconds in best.items())
            print(f"  D = {dims:>2}, k = {k}: {words}")


def _agreement(neighbours: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows whose neighbour sets are equal."""
    return float(np.mean(np.all(np.sort(neighbours, axis=1) == np.sort(reference, axis=1), axis=1)))


if __name__ == "__main__":
    main()
