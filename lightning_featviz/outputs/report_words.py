"""The static report's words: section titles, column and scalar names a person reads instead of tags and CSV
headers, and the headline (which layer separates the classes, from which epoch; how many images are flagged)."""

from __future__ import annotations

import re
from pathlib import Path

#: Figure kinds in the order a reader wants them, with a heading each; others follow in name order.
SECTIONS = {
    "purity_by_depth": "Purity by depth",
    "purity_by_class": "Purity of each class",
    "neighbours": "Neighbour grids: each query, then its k nearest neighbours",
    "tsne_2d": "t-SNE maps (2-D)",
    "tsne_3d": "t-SNE maps (3-D)",
    "wrong_cluster": "Images in the wrong semantic cluster",
    "label_issues": "Labels to check",
    "neighbour_confusion": "Neighbourhood confusion",
    "schedule": "What each epoch made, and why",
}

#: The heading of each kind's table.
TABLE_WORDS = {
    "wrong_cluster": "Images in another class's cluster, strongest first",
    "label_issues": "Labels most likely wrong, highest score first",
    "schedule": "The outputs of each analysed epoch, and what the time budget left out",
}

#: The run's identity on the page: key of the ``about`` mapping -> its words.
ABOUT_WORDS = {
    "model": "model",
    "data": "data",
    "samples": "samples analysed",
    "classes": "classes",
    "date": "written",
    "version": "lightning_featviz",
}

#: CSV columns (the wrong-cluster and label-issue lists) -> the words in the report's tables.
COLUMN_WORDS = {
    "rank": "rank",
    "index": "index",
    "path": "file",
    "label": "label",
    "cluster": "sits among",
    "neighbours_in_cluster": "neighbours there",
    "share": "share of neighbours",
    "prediction": "model says",
    "confidence": "model's confidence",
    "correct": "model right",
    "given_label": "given label",
    "suggested_label": "suggested label",
    "score": "score",
    "category": "what neighbours and model say",
    "neighbour_share": "neighbours with its label",
    "model_probability": "model's probability of its label",
}

#: Scalar names (the tag's second part, less ``@k``) -> words.
MEASURE_WORDS = {
    "knn_purity": "kNN purity",
    "knn_accuracy": "kNN accuracy",
    "purity_of_class": "kNN purity of class",
    "tsne_purity": "purity on the map",
    "tsne_trustworthiness": "map trustworthiness",
    "tsne_trustworthiness_error": "map trustworthiness, standard error",
    "tsne_displacement": "map movement since the previous epoch",
    "wrong_cluster_share": "share in another class's cluster",
}

#: A layer *separates the classes* from the first epoch its kNN purity reaches this share of the best layer's.
SEPARATES = 0.9

_STEP = re.compile(r"step=(\d+)")


def when(path: Path, epochs_of: dict[int, int]) -> str:
    """``"epoch 3"`` for a ``step=…`` file (``"step 120"`` where the epoch is not known)."""
    match = _STEP.search(path.name)
    if match is None:
        return path.stem
    step = int(match.group(1))
    return f"epoch {epochs_of[step]}" if step in epochs_of else f"step {step}"


def figure_words(name: str) -> str:
    """What a figure's last tag part names: ``all_layers`` -> ``every layer``, ``input_vs_pool`` -> ``input and pool``,
    a layer's name as it is."""
    if name == "all_layers":
        return "every layer"
    first, vs, last = name.partition("_vs_")
    return f"{first} and {last}" if vs else name


def scalar_words(tag: str) -> str:
    """``featviz/tsne_purity@10/layer3/2d`` -> ``"layer3: purity on the map (2-D), k = 10"``."""
    parts = tag.split("/")
    if len(parts) < 3:
        return tag.replace("_", " ")
    name, _, k = parts[1].partition("@")
    layer, extra = parts[2], [re.sub(r"^(\d)d$", r"\1-D", part) for part in parts[3:]]
    words = MEASURE_WORDS.get(name, name.replace("_", " "))
    return f"{layer}: {words}" + (f" ({', '.join(extra)})" if extra else "") + (f", k = {k}" if k else "")


def headline(values: dict[str, dict[int, float]], layers: list[str], flagged: tuple[int, str, str] | None) -> str:
    """The run in a sentence or two, from its scalars (tag -> epoch -> value; ``layers`` in capture order) and
    ``flagged`` (images in another class's cluster, their layer, ``"epoch N"``)."""
    purity = {
        tag.split("/", 2)[2]: series for tag, series in values.items() if re.fullmatch(r"[^/]+/knn_purity@\d+/.+", tag)
    }
    said = []
    latest = max((epoch for series in purity.values() for epoch in series), default=None)
    final = {layer: purity[layer][latest] for layer in layers if layer in purity and latest in purity[layer]}
    if final:
        best_layer = max(final, key=lambda layer: final[layer])
        best = final[best_layer]
        first = next(iter(final))  # the first layer captured (the input, where it is)
        gain = best - final.get(first, 0.0)
        if best_layer == first or gain < 0.05:
            said.append(
                f"No layer separates the classes much better than {first} yet: the best kNN purity at epoch {latest} "
                f"is {best:.2f} ({best_layer}), {first}'s is {final[first]:.2f}."
            )
        else:
            layer = next(name for name in layers if final.get(name, -1.0) >= SEPARATES * best)
            epoch = min(e for e, value in purity[layer].items() if value >= SEPARATES * best)
            said.append(
                f"Classes separate from {layer} at epoch {epoch}: kNN purity {final[layer]:.2f} there at epoch "
                f"{latest} (the best, {best_layer}: {best:.2f}; {first}: {final[first]:.2f})."
            )
    if flagged is not None:
        count, where, when_flagged = flagged
        verb = "image sits" if count == 1 else "images sit"
        said.append(f"{count} {verb} in another class's cluster at {where}, {when_flagged}.")
    return " ".join(said) or "No epoch analysed yet."
