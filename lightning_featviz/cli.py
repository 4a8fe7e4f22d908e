"""Command line: ``featviz demo`` (the quick start), ``featviz analyse`` (a trained model, post hoc) and
``featviz layers`` (list module paths)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

#: Where the demo's printed recipe writes its validation digits as an ImageFolder, for ``featviz analyse``.
DIGITS_FOLDER = "featviz_digits_val"


def purity_table(history: Sequence[dict], layers: Sequence[str]) -> str:
    """A text table of kNN purity, one row per epoch, one column per layer."""
    epochs = sorted({int(row["epoch"]) for row in history})
    width = max(9, *(len(layer) + 2 for layer in layers))
    lines = ["epoch" + "".join(f"{layer:>{width}}" for layer in layers)]
    for epoch in epochs:
        values = {row["layer"]: row["knn_purity"] for row in history if row["epoch"] == epoch}
        cells = "".join(f"{values[layer]:>{width}.3f}" if layer in values else f"{'-':>{width}}" for layer in layers)
        lines.append(f"{epoch:<5}{cells}")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_featviz import FeatureVisualizer
    from lightning_featviz.demo.model import DEMO_LAYERS, ClassificationData, ImageClassifier
    from lightning_featviz.options import CaptureOptions, MapOptions, OutputOptions

    layers = args.layers or list(DEMO_LAYERS)
    if args.data and not Path(args.data).is_dir():
        raise SystemExit(
            f"featviz demo: expected `--data` to be an ImageFolder directory (root/<class>/<image>), but got "
            f"{args.data!r}, which is not one.\nHint: leave --data out to run on the built-in digits."
        )
    pl.seed_everything(args.seed, verbose=False)
    if args.data:
        data = ClassificationData.folder(
            args.data, image_size=args.image_size or 224, batch_size=args.batch_size, seed=args.seed
        )
    else:
        data = ClassificationData.digits(batch_size=args.batch_size, seed=args.seed, image_size=args.image_size or 32)
    model = ImageClassifier(num_classes=len(data.classes), arch=args.arch, weights=args.weights, lr=args.lr)
    logger = TensorBoardLogger(args.logdir, name="featviz_demo")
    report_dir = Path(logger.log_dir) / "report"
    visualizer = FeatureVisualizer(
        layers=layers,
        k=args.k,
        max_samples=args.max_samples,
        seed=args.seed,
        outputs=OutputOptions(query_indices=args.query_indices, report_dir=report_dir),
        capture=CaptureOptions(image_mean=data.mean, image_std=data.std),
        maps=MapOptions(every_n_epochs=args.tsne_every_n_epochs or None),
        overhead=None,  # the demo shows its whole schedule, the same on every machine
    )
    checkpoint = ModelCheckpoint(save_last=True, save_top_k=0)  # <log dir>/checkpoints/last.ckpt
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        logger=logger,
        callbacks=[visualizer, checkpoint],
        accelerator=args.accelerator,
        devices=1,
        enable_progress_bar=not args.quiet,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    print(f"\nkNN purity@{args.k} per layer (fraction of each image's {args.k} nearest neighbours sharing its class):")
    print(purity_table(visualizer.history, [str(layer) for layer in layers]))
    print(f"\nTrained {args.epochs} epochs in {time.perf_counter() - start:.0f} s. Logs: {logger.log_dir}")
    print(f"Open them with:\n  tensorboard --logdir {args.logdir}")
    print(f"Or open the static report (no server needed):\n  {report_dir / 'index.html'}")
    size = args.image_size or (224 if args.data else 32)
    if args.data:
        data_steps, data_option = "", f" --data {args.data}"
    else:  # the built-in digits have no folder: its validation split (same seed and size) written as one first
        data_steps = (
            '  python -c "from lightning_featviz.demo.datasets import ColouredDigits, save_image_folder; '
            f"d = ColouredDigits('val', image_size={size}, seed={args.seed}); "
            f"save_image_folder(d, '{DIGITS_FOLDER}', d.classes)\"\n"
        )
        data_option = f" --no-normalize --data {DIGITS_FOLDER}"
    where = "on any data" if args.data else "on any data; here its validation digits, written as an ImageFolder first"
    print(
        f"Analyse the trained model again later, {where}:\n{data_steps}  featviz analyse --module "
        f"lightning_featviz.demo.model.ImageClassifier --checkpoint {checkpoint.last_model_path} --image-size {size}"
        f"{data_option}"
    )
    return 0


def run_analysis(args: argparse.Namespace) -> int:
    from lightning_featviz.posthoc import analyse_checkpoint

    if (args.arch is None) == (args.module is None):
        raise SystemExit("featviz analyse: give either --arch (a torchvision architecture) or --module (a class path).")
    # bad paths and class paths end here with their reason, before anything is loaded (not in a traceback)
    for name, value, there, what in (
        ("--data", args.data, Path(args.data).is_dir(), "an ImageFolder directory (root/<class>/<image>)"),
        ("--checkpoint", args.checkpoint, Path(args.checkpoint).is_file(), "a checkpoint file"),
    ):
        if not there:
            raise SystemExit(f"featviz analyse: expected `{name}` to be {what}, but got {value!r}, which is not one.")
    if args.module is not None:
        from lightning_featviz.loading import module_class

        try:
            module_class(args.module)
        except ValueError as error:
            raise SystemExit(f"featviz analyse: {error}") from None
    analysis = analyse_checkpoint(
        args.checkpoint,
        args.data,
        args.out,
        arch=args.arch,
        module=args.module,
        layers=args.layers or "auto",
        image_size=args.image_size,
        normalize=not args.no_normalize,
        batch_size=args.batch_size,
        accelerator=args.accelerator,
        progress=not args.quiet,
        k=args.k,
        max_samples=args.max_samples,
    )
    print(f"\nkNN purity@{args.k} per layer:")
    layers = list(dict.fromkeys(str(row["layer"]) for row in analysis.history))
    print(purity_table(analysis.history, layers))
    print(f"\nReport: {analysis.report}\nTensorBoard: tensorboard --logdir {analysis.log_dir}")
    return 0


def list_layers(args: argparse.Namespace) -> int:
    """Print a model's default layers, then every module that ran with its output shape, layout and vector size."""

    import torch

    from lightning_featviz.capture.default_layers import default_layers, describe_candidates

    if args.module is not None:
        from lightning_featviz.loading import module_class

        try:
            model = module_class(args.module)()
        except ValueError as error:
            raise SystemExit(f"featviz layers: {error}") from None
        except TypeError as error:  # it needs arguments
            raise SystemExit(
                f"featviz layers: expected `--module` to be a class built without arguments, but got "
                f"{args.module!r} ({type(error).__name__}: {error}).\nHint: give its arguments defaults, or list a "
                "torchvision architecture with --arch or a timm model with --timm."
            ) from None
    elif args.timm is not None:
        import timm

        try:  # random init: nothing is downloaded; a ViT is built for the input size
            model = timm.create_model(args.timm, pretrained=False, img_size=args.image_size)
        except TypeError:  # a CNN takes any size
            model = timm.create_model(args.timm, pretrained=False)
    else:
        from torchvision import models

        model = models.get_model(args.arch, weights=None)
    example = torch.rand(2, args.channels, args.image_size, args.image_size)
    found = default_layers(model, example, args.reduction)
    print(f"default layers: {', '.join(found.layers)}")
    print(f"every module that ran on a {args.channels}x{args.image_size}x{args.image_size} input (* = default):")
    print("\n".join(describe_candidates(found, args.reduction)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featviz", description="See what an image classifier learns while it is fine-tuned."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fine-tune a ResNet-18 with the callback on built-in digits or --data DIR")
    demo.add_argument(
        "--data", help="an ImageFolder directory (root/<class>/<image>); default: built-in coloured digits"
    )
    demo.add_argument("--logdir", default="./lightning_logs", help="TensorBoard log directory (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=8)
    demo.add_argument("--arch", default="resnet18", help="torchvision architecture (default: %(default)s)")
    demo.add_argument("--weights", help="torchvision weights name (e.g. DEFAULT; needs internet) or a state_dict file")
    demo.add_argument("--layers", nargs="+", help="layers to analyse (default: the demo's, input to avgpool)")
    demo.add_argument("--k", type=int, default=10)
    demo.add_argument("--max-samples", type=int, default=2000)
    demo.add_argument(
        "--tsne-every-n-epochs",
        type=int,
        default=2,
        help="t-SNE maps and projector every n epochs and at the last (default: %(default)s, so the tab's slider "
        "shows the maps change); 0 = off",
    )
    demo.add_argument("--query-indices", type=int, nargs="+", default=[394, 97, 996, 460, 737])
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--lr", type=float, default=1e-3)
    demo.add_argument("--image-size", type=int, help="image side in pixels (default: 32 for digits, 224 for --data)")
    demo.add_argument("--accelerator", default="auto")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=run_demo)

    post = commands.add_parser(
        "analyse", help="analyse a trained classifier on an ImageFolder: TensorBoard logs and an HTML report"
    )
    post.add_argument(
        "--data", required=True, help="an ImageFolder directory (root/<class>/<image>; root/val when root/train exists)"
    )
    post.add_argument("--checkpoint", required=True, help="a state_dict or Lightning checkpoint file")
    post.add_argument("--arch", help="torchvision architecture of the checkpoint (e.g. resnet18)")
    post.add_argument("--module", help="or the LightningModule class path (package.module.Class) of the checkpoint")
    post.add_argument("--out", default="./featviz_analysis", help="output directory (default: %(default)s)")
    post.add_argument("--layers", nargs="+", help="module paths (default: the input, main stages and pooled feature)")
    post.add_argument("--k", type=int, default=10)
    post.add_argument("--max-samples", type=int, default=2000)
    post.add_argument("--image-size", type=int, default=224, help="image side in pixels (default: %(default)s)")
    post.add_argument(
        "--no-normalize",
        action="store_true",
        help="feed images in [0, 1] instead of ImageNet-normalised (a model trained so, like the demo on its digits)",
    )
    post.add_argument("--batch-size", type=int, default=64)
    post.add_argument("--accelerator", default="auto")
    post.add_argument("--quiet", action="store_true", help="no progress bar")
    post.set_defaults(run=run_analysis)

    layers = commands.add_parser(
        "layers",
        help="a model's default layers and every module path with its output layout, reduction and vector size",
    )
    layers.add_argument("--arch", default="resnet18", help="torchvision architecture (default: %(default)s)")
    layers.add_argument("--module", help="or an importable class (package.module.Class) built without arguments")
    layers.add_argument("--timm", help="or a timm model name (random init; needs `pip install timm`)")
    layers.add_argument("--image-size", type=int, default=224, help="input side in pixels (default: %(default)s)")
    layers.add_argument("--channels", type=int, default=3, help="input channels (default: %(default)s)")
    layers.add_argument(
        "--reduction", default="avg", choices=["avg", "adaptive", "flatten"], help="how conv maps become vectors"
    )
    layers.set_defaults(run=list_layers)

    page = commands.add_parser(
        "page", help="the FEATVIZ tab of one run as a single HTML file that opens without a server (file://)"
    )
    page.add_argument("run_dir", help="the run's log folder, the one that holds featviz_dashboard/")
    page.add_argument("--out", help="the HTML file to write (default: RUN_DIR/featviz_tab.html)")
    page.add_argument("--max-epochs", type=int, default=20, help="at most this many epochs, evenly spread")
    page.set_defaults(run=write_page)
    return parser


def write_page(args: argparse.Namespace) -> int:
    """``featviz page``: the tab of one run as one HTML file."""
    from lightning_featviz.dashboard.standalone import TAB_PAGE, standalone_page
    from lightning_featviz.outputs.files import write_atomically

    if args.max_epochs < 1:
        raise SystemExit(f"Expected `--max-epochs` to be at least 1, but got {args.max_epochs}.")
    try:
        page = standalone_page(args.run_dir, max_epochs=args.max_epochs)
    except ValueError as error:
        raise SystemExit(f"{error} Hint: pass the folder of one run, e.g. lightning_logs/version_0.") from None
    out = Path(args.out) if args.out else Path(args.run_dir) / TAB_PAGE
    write_atomically(out, page)
    print(f"Wrote {out} ({len(page.encode()) / 1e6:.1f} MB): open it in a browser, no server needed.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
