"""Regenerate the pictures in docs/images from a real quick-start run.

    python docs/make_images.py [--logdir /tmp/featviz_docs]

Runs ``featviz demo`` with its defaults, then reads the event files back with TensorBoard's own
reader and writes the last epoch's neighbour grids, t-SNE maps (2-D, 3-D, pixel space vs avgpool,
every layer in order), the wrong-cluster gallery, confusion matrices, purity by depth, the dataset
cartography, a purity-over-epochs chart and the projector's sprite as PNG.
"""

from __future__ import annotations

import argparse
import glob
import subprocess
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_featviz.demo.model import DEMO_LAYERS

IMAGES = Path(__file__).parent / "images"
LAYERS = list(DEMO_LAYERS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logdir", default="/tmp/featviz_docs")
    args = parser.parse_args()
    if not glob.glob(f"{args.logdir}/**/events.out.tfevents.*", recursive=True):
        subprocess.run(
            [sys.executable, "-m", "lightning_featviz", "demo", "--logdir", args.logdir, "--quiet"], check=True
        )
    run_dir = Path(sorted(glob.glob(f"{args.logdir}/**/events.out.tfevents.*", recursive=True))[-1]).parent
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    IMAGES.mkdir(exist_ok=True)
    for tag, name in [
        ("featviz/neighbours/input_vs_avgpool", "neighbours_input_vs_avgpool"),
        ("featviz/neighbours/layer2", "neighbours_layer2"),
        ("featviz/tsne_2d/avgpool", "tsne_2d_avgpool"),
        ("featviz/tsne_3d/avgpool", "tsne_3d_avgpool"),
        ("featviz/tsne_2d/input_vs_avgpool", "tsne_2d_input_vs_avgpool"),
        ("featviz/tsne_2d/all_layers", "tsne_2d_all_layers"),
        ("featviz/wrong_cluster/avgpool", "wrong_cluster_avgpool"),
        ("featviz/neighbour_confusion/avgpool", "confusion_avgpool"),
        ("featviz/neighbour_confusion/input", "confusion_input"),
        ("featviz/purity_by_depth/all_layers", "purity_by_depth"),
        ("featviz/wrong_cluster_cartography/avgpool", "cartography_avgpool"),
    ]:
        (IMAGES / f"{name}.png").write_bytes(events.Images(tag)[-1].encoded_image_string)

    fig = Figure(figsize=(6.5, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for layer in LAYERS:
        values = events.Scalars(f"featviz/knn_purity@10/{layer}")
        ax.plot([v.step for v in values], [v.value for v in values], marker="o", label=layer)
    ax.set(xlabel="training step", ylabel="kNN purity@10", ylim=(0, 1), title="Purity per layer over a quick-start run")
    ax.axhline(0.1, color="grey", linestyle=":", linewidth=1)
    ax.text(ax.get_xlim()[0], 0.06, "  chance (10 classes)", ha="left", fontsize=8, color="grey")
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(IMAGES / "purity_by_layer.png")
    sprite = Image.open(sorted((run_dir / "featviz_projector" / "sprites").glob("*.*"))[0])  # a JPEG
    sprite.resize((512, 512), Image.Resampling.LANCZOS).save(IMAGES / "projector_sprite.png")
    print(f"wrote {sorted(p.name for p in IMAGES.glob('*.png'))}")


if __name__ == "__main__":
    main()
