"""Built-in demo data (no download) and the ImageFolder path for a user's own images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

NUM_VAL_DIGITS = 1000


def render_coloured_digits(digits: Tensor, image_size: int, generator: torch.Generator) -> Tensor:
    """Paint 8x8 digit images (N, 8, 8), values 0..16, as RGB images (N, 3, S, S) in [0, 1].

    Each image gets a random two-colour gradient background at a random angle, a stroke colour
    that contrasts with the background's brightness, a random position and a little noise, so
    that pixel-space neighbours follow colour and brightness rather than the digit.
    """
    n, s = digits.shape[0], image_size
    glyph = int(round(s * 0.75))
    masks = F.interpolate(digits[:, None].float() / 16.0, size=(glyph, glyph), mode="bilinear", align_corners=False)
    canvas = torch.zeros(n, 1, s, s)
    offsets = torch.randint(0, s - glyph + 1, (n, 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        canvas[i, :, dy : dy + glyph, dx : dx + glyph] = masks[i]
    masks = canvas.clamp(0, 1)

    angle = torch.rand(n, generator=generator) * 2 * math.pi
    coords = torch.linspace(-0.5, 0.5, s)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    ramp = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
    ramp = (
        (ramp - ramp.amin(dim=(1, 2), keepdim=True))
        / (ramp.amax(dim=(1, 2), keepdim=True) - ramp.amin(dim=(1, 2), keepdim=True))
    ).unsqueeze(1)
    start, end = torch.rand(n, 3, 1, 1, generator=generator), torch.rand(n, 3, 1, 1, generator=generator)
    background = start * (1 - ramp) + end * ramp

    bright_background = background.mean(dim=(1, 2, 3)) > 0.5
    stroke = torch.rand(n, 3, 1, 1, generator=generator) * 0.35
    stroke = torch.where(bright_background[:, None, None, None], stroke, 1.0 - stroke)
    images = background * (1 - masks) + stroke * masks
    images = images + 0.03 * torch.randn(images.shape, generator=generator)
    return images.clamp(0, 1)


class ColouredDigits(Dataset):
    """scikit-learn's handwritten digits, painted on random colour gradients (see :func:`render_coloured_digits`).

    The 1,797 digits are split by ``seed``: ``"val"`` holds 1,000 digits, one rendering each;
    ``"train"`` holds the other 797, ``train_copies`` renderings each. Everything is deterministic
    by ``seed``; nothing is downloaded.

    Items are ``(image, label)``: a float tensor (3, S, S) in [0, 1] and an int class id.
    """

    classes = [str(d) for d in range(10)]

    def __init__(self, split: str = "train", image_size: int = 32, train_copies: int = 3, seed: int = 0):
        from sklearn.datasets import load_digits

        if split not in ("train", "val"):
            raise ValueError(f"Expected `split` to be 'train' or 'val', but got {split!r}.")
        digits = load_digits()
        order = torch.randperm(len(digits.target), generator=torch.Generator().manual_seed(seed))
        chosen = order[:NUM_VAL_DIGITS] if split == "val" else order[NUM_VAL_DIGITS:].repeat(train_copies)
        generator = torch.Generator().manual_seed(seed * 2 + (split == "train"))
        self.images = render_coloured_digits(torch.as_tensor(digits.images)[chosen], image_size, generator)
        self.targets = torch.as_tensor(digits.target)[chosen].long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.targets[index])


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split positions into (train, val), taking ``val_fraction`` of each class (at least one) for val."""
    generator = torch.Generator().manual_seed(seed)
    labels_t = torch.as_tensor(list(labels))
    train: list[int] = []
    val: list[int] = []
    for label in labels_t.unique().tolist():
        positions = torch.nonzero(labels_t == label).flatten()
        members = positions[torch.randperm(len(positions), generator=generator)].tolist()
        n_val = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
        val += members[:n_val]
        train += members[n_val:]
    return sorted(train), sorted(val)


def save_image_folder(dataset: Dataset, root: str | Path, classes: Sequence[str]) -> Path:
    """Write a dataset of ``(image (3, H, W) in [0, 1], label)`` as PNGs ``root/<class>/<index>.png``."""
    from PIL import Image

    root = Path(root)
    for index in range(len(dataset)):  # type: ignore[arg-type]
        image, label = dataset[index]
        folder = root / classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{index:05d}.png")
    return root
