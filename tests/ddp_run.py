"""Run by test_distributed.py in a fresh process: validate TinyNet with the callback on ``--devices``
CPU processes (DDP over gloo when more than one) and write what each rank logged as JSON.

    python tests/ddp_run.py --devices 2 --out result.json [--val-size 157] [--max-samples 101]
        [--rank-one-keeps-nothing] [--rank-one-sees-nothing] [--stage fit] [--background] [--auto-layers]
        [--then --out other.json ...]

``--then`` starts another run in the same processes, one Trainer after the other (Lightning launches the
other ranks once and keeps the process group): the tests pay process start-up, imports and gloo set-up
once instead of once per case. Each run gets its own seed, model, callback, Trainer and log folder, and
records the warnings it raised (``"warnings"`` in its JSON; they still go to stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from google.protobuf import text_format
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyNet  # noqa: E402

from lightning_featviz import (
    CaptureOptions,
    FeatureVisualizer,  # noqa: E402
    MapOptions,
    ResourceOptions,
)
from lightning_featviz.capture.bank import Choice  # noqa: E402
from lightning_featviz.dashboard.data import FOLDER, read_epoch, read_index  # noqa: E402
from lightning_featviz.demo.datasets import ColouredDigits  # noqa: E402

SEED = 3


class Indexed(Dataset):
    """``(image, label, dataset index)``: a sampler of unknown order needs the index from the batch."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return (*self.dataset[index], index)


class SplitSampler(Sampler[int]):
    """Rank 0 gets the kept samples, rank 1 only samples outside the kept subset."""

    def __init__(self, size: int, keep: set[int], rank_one_empty: bool = False):
        self.size, self.keep, self.rank_one_empty = size, keep, rank_one_empty

    def _mine(self) -> list[int]:
        rank = dist.get_rank() if dist.is_initialized() else 0
        if self.rank_one_empty:
            return list(range(self.size)) if rank == 0 else []
        return [i for i in range(self.size) if (i in self.keep) == (rank == 0)]

    def __iter__(self):
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())


def dashboard_neighbours(folder: Path) -> dict[str, object]:
    """What the FEATVIZ tab reads of the run: its epochs, and per layer each sample's neighbours as dataset indices."""
    index = read_index(folder)
    found: dict[str, object] = {"epochs": [entry["epoch"] for entry in index["epochs"]]}
    for entry in index["epochs"]:
        samples = json.loads((folder / f"samples_{entry['samples']}.json").read_text())["indices"]
        arrays = read_epoch(folder, entry["file"])
        for i, layer in enumerate(entry["layers"]):
            rows = arrays[f"L{i}_neighbours"]
            found[f"{entry['epoch']}/{layer['name']}"] = {
                str(samples[row]): sorted(samples[n] for n in rows[row]) for row in range(len(rows))
            }
    return found


def parse(argv: list[str]) -> list[argparse.Namespace]:
    """One namespace per run: ``argv`` split at ``--then``; every run shares the first run's ``--devices``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--val-size", type=int, default=157)
    parser.add_argument("--max-samples", type=int, default=101)
    parser.add_argument("--rank-one-keeps-nothing", action="store_true")
    parser.add_argument("--rank-one-sees-nothing", action="store_true")
    parser.add_argument("--stage", choices=["validate", "fit"], default="validate")
    parser.add_argument("--background", action="store_true", help="rank 0 reports in its report process")
    parser.add_argument("--auto-layers", action="store_true", help="layers='auto' instead of a fixed list")
    groups: list[list[str]] = [[]]
    for word in argv:
        if word == "--then":
            groups.append([])
        else:
            groups[-1].append(word)
    runs = [parser.parse_args(groups[0])]
    parser.set_defaults(devices=runs[0].devices)
    runs += [parser.parse_args(group) for group in groups[1:]]
    if any(args.devices != runs[0].devices for args in runs):
        parser.error("every run of one launch uses the same --devices")
    return runs


def run(args: argparse.Namespace) -> None:
    """Validate (or fit one epoch) as ``args`` say and write ``{args.out}.rank{rank}``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a warning raised by an earlier run of this process is raised again
        result = _run(args)
    for warning in caught:  # to stderr, as without the recording
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    result["warnings"] = [str(warning.message) for warning in caught]
    with open(f"{args.out}.rank{result['rank']}", "w") as handle:
        json.dump(result, handle)


def _run(args: argparse.Namespace) -> dict[str, object]:
    pl.seed_everything(0)
    val = Subset(ColouredDigits("val", seed=0), range(args.val_size))
    plain, sampler, distributed_sampler, extractor = val, None, True, None
    if args.rank_one_keeps_nothing or args.rank_one_sees_nothing:
        labels = torch.tensor([int(val[i][1]) for i in range(args.val_size)])
        chosen = Choice(args.max_samples, floor=6, seed=SEED).rows(torch.arange(args.val_size), labels)
        keep = set(chosen.nonzero().flatten().tolist())
        sampler = SplitSampler(args.val_size, keep, rank_one_empty=args.rank_one_sees_nothing)
        distributed_sampler = False
        val, extractor = Indexed(val), lambda batch: tuple(batch)  # this sampler's order is not known
    loader = DataLoader(val, batch_size=16, sampler=sampler)
    model = TinyNet()
    model.allow_zero_length_dataloader_with_multiple_devices = args.rank_one_sees_nothing
    if args.rank_one_sees_nothing and args.stage == "fit":
        # DDP broadcasts buffers (BatchNorm's) in every forward while fitting: with a rank that has no
        # validation batch that alone hangs, callback or not. A model without buffers does not.
        model.bn1 = torch.nn.Identity()
    layers = "auto" if args.auto_layers else ["input", "conv2", "pool"]
    visualizer = FeatureVisualizer(
        layers,
        overhead=None,
        k=5,
        max_samples=args.max_samples,
        seed=SEED,
        maps=MapOptions(dims=[2]),
        resources=ResourceOptions(background=args.background),
        capture=CaptureOptions(batch_extractor=extractor),
    )
    out_dir = Path(args.out).parent / f"logs_{Path(args.out).stem}_{args.devices}"
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        logger=TensorBoardLogger(out_dir),
        callbacks=[visualizer],
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=distributed_sampler,
        max_epochs=1,
        limit_train_batches=2,
    )
    if args.stage == "fit":
        trainer.fit(model, train_dataloaders=DataLoader(plain, batch_size=16), val_dataloaders=loader)
    else:
        trainer.validate(model, dataloaders=loader)
    metrics = {tag: float(value) for tag, value in trainer.callback_metrics.items() if tag.startswith("featviz/")}
    result: dict[str, object] = {"metrics": metrics, "history": visualizer.history, "rank": trainer.global_rank}
    log_dir = trainer.log_dir  # a collective: every rank asks
    if trainer.is_global_zero and metrics:
        config = ProjectorConfig()
        text_format.Parse((Path(log_dir) / "projector_config.pbtxt").read_text(), config)
        metadata = Path(log_dir) / config.embeddings[0].metadata_path
        header, *rows = (line.split("\t") for line in metadata.read_text().splitlines())
        result["indices"] = [int(row[header.index("index")]) for row in rows]
        result["wrong_cluster"] = visualizer.wrong_cluster_indices
        result["dashboard"] = dashboard_neighbours(Path(log_dir) / FOLDER)
        result["dynamics"] = {  # rank 0's per-sample history (NaN as -9: JSON lists compare by value)
            layer: {key: v.float().nan_to_num(-9.0).tolist() if torch.is_tensor(v) else v for key, v in state.items()}
            for layer, state in visualizer.state_dict()["dynamics"].items()
        }
    return result


def main() -> None:
    for args in parse(sys.argv[1:]):
        run(args)
    torch.distributed.destroy_process_group() if dist.is_initialized() else None


if __name__ == "__main__":
    main()
