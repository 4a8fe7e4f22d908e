"""The quick start as the few lines a user writes in their own project.

Fine-tunes torchvision's ResNet-18 on the built-in coloured digits (no download) and logs kNN purity every
validation epoch, and neighbour grids, maps and the wrong-cluster images on the callback's schedule, for the input
(pixel space), the first three ResNet stages and the final average pool (on 32-px digits ``layer4`` is a 1 x 1 map,
the same vector as ``avgpool``). Then: ``tensorboard --logdir lightning_logs``.

With your own images, swap the data for ``ClassificationData.folder("path/to/food")`` (an
ImageFolder: ``root/<class>/<image>``) and pass ``weights="DEFAULT"`` to start from ImageNet
weights (downloaded by torchvision).
"""

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_featviz import FeatureVisualizer, OutputOptions
from lightning_featviz.demo.model import ClassificationData, ImageClassifier

pl.seed_everything(0)
data = ClassificationData.digits(batch_size=32)
model = ImageClassifier(num_classes=len(data.classes), arch="resnet18")

visualizer = FeatureVisualizer(
    layers=["input", "layer1", "layer2", "layer3", "avgpool"],
    k=10,
    outputs=OutputOptions(query_indices=[394, 97, 996, 460, 737]),
)
trainer = pl.Trainer(max_epochs=8, logger=TensorBoardLogger("lightning_logs"), callbacks=[visualizer])
trainer.fit(model, datamodule=data)

print(
    {
        row["layer"]: round(row["knn_purity"], 3)
        for row in visualizer.history
        if row["epoch"] == trainer.current_epoch - 1
    }
)
