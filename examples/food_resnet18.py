"""The seed workflow: fine-tune a ResNet-18 on a 5-class food ImageFolder and watch what it learns.

    python examples/food_resnet18.py --data path/to/food --weights DEFAULT
    tensorboard --logdir lightning_logs

``--data`` is an ImageFolder (``food/<class>/<image>``, e.g. hamburger, pizza, salad, sushi, fries;
``food/train`` and ``food/val`` are used when both exist, else a stratified 80/20 split).
``--weights DEFAULT`` starts from torchvision's ImageNet weights (downloaded once, so online; or
give a saved ``state_dict`` file); without it the network starts from random weights.

Every validation epoch the callback logs kNN purity from pixel space to the average pool; every 5th epoch and at
the last, neighbour grids of the query images and the images that sit in another class's cluster ("a hamburger that
looks like a salad"), with a CSV of their file paths; every 10th and at the last, 2-D/3-D t-SNE maps and projector
embeddings. A time budget (``--overhead``, 10% of ``fit``'s time) may leave some out on a short fit; ``--overhead
none`` makes the schedule as written (docs/performance.md, "The schedule and the time budget").
"""

import argparse

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import CaptureOptions, FeatureVisualizer, OutputOptions
from lightning_featviz.demo.model import ClassificationData, ImageClassifier


def overhead(value: str) -> float | None:
    """``--overhead``: a share of ``fit``'s time, or ``none`` (no time budget)."""
    return None if value == "none" else float(value)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the food ImageFolder")
    parser.add_argument("--weights", help="torchvision weights (DEFAULT) or a state_dict file; default: random")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument(
        "--overhead",
        type=overhead,
        default=0.1,
        help="the callback's time budget, a share of fit's time (default 0.1); 'none': every scheduled output",
    )
    args = parser.parse_args(argv)

    pl.seed_everything(0)
    data = ClassificationData.folder(args.data, image_size=args.image_size, batch_size=args.batch_size)
    model = ImageClassifier(num_classes=len(data.classes), arch="resnet18", weights=args.weights, lr=3e-4)
    visualizer = FeatureVisualizer(
        layers=["input", "layer1", "layer2", "layer3", "layer4", "avgpool"],
        k=10,
        capture=CaptureOptions(image_mean=data.mean, image_std=data.std),  # undo the ImageNet normalisation
        outputs=OutputOptions(report_dir=f"{args.logdir}/food_report"),  # the same figures as a static HTML page
        overhead=args.overhead,
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        logger=TensorBoardLogger(args.logdir, name="food"),
        callbacks=[visualizer, ModelCheckpoint(monitor="featviz/knn_purity@10/avgpool", mode="max")],
    )
    trainer.fit(model, datamodule=data)
    last = {row["layer"]: round(row["knn_purity"], 3) for row in visualizer.history[-6:]}
    print("kNN purity@10 at the last epoch:", last)
    print("Images in the wrong cluster at avgpool:", visualizer.wrong_cluster_indices.get("avgpool", [])[:10])


if __name__ == "__main__":
    main()
