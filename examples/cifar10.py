"""CIFAR-10: train a ResNet-18 (adapted to 32x32 images) and watch its classes separate layer by layer.

    python examples/cifar10.py --root ./data      # downloads CIFAR-10 (170 MB) into ./data once
    tensorboard --logdir lightning_logs

Validation uses the 10,000 test images; the callback keeps 2,000 of them (the same every epoch).
Maps and projector files are made every 2nd epoch; kNN purity and grids every epoch.
"""

import argparse

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torchvision import datasets, transforms

from lightning_featviz import CaptureOptions, FeatureVisualizer, MapOptions
from lightning_featviz.demo.model import ClassificationData, ImageClassifier

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def cifar10(root: str, batch_size: int) -> ClassificationData:
    normalise = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    train = datasets.CIFAR10(root, train=True, download=True, transform=transforms.Compose(augment + normalise))
    val = datasets.CIFAR10(root, train=False, download=True, transform=transforms.Compose(normalise))
    return ClassificationData(train, val, train.classes, batch_size, num_workers=4, mean=MEAN, std=STD)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="./data", help="where CIFAR-10 is (or is downloaded to)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    pl.seed_everything(0)
    data = cifar10(args.root, args.batch_size)
    model = ImageClassifier(num_classes=10, arch="resnet18", lr=1e-3)
    # The usual CIFAR stem: a 3x3 first convolution and no max-pool keep 32x32 images from shrinking too fast.
    model.model.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    model.model.maxpool = nn.Identity()
    visualizer = FeatureVisualizer(
        layers=["input", "layer1", "layer2", "layer3", "layer4", "avgpool"],
        k=10,
        max_samples=2000,
        capture=CaptureOptions(image_mean=MEAN, image_std=STD),
        maps=MapOptions(every_n_epochs=2),
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        precision="16-mixed" if torch.cuda.is_available() else "32-true",
        logger=TensorBoardLogger("lightning_logs", name="cifar10"),
        callbacks=[visualizer],
    )
    trainer.fit(model, datamodule=data)


if __name__ == "__main__":
    main()
