"""TensorBoard event files of a training run, written while it trains:

    runs/<grid>/tensorboard/<label> (seed <n>)/events.out.tfevents...

so that ``tensorboard --logdir runs/<grid>`` shows every run of the grid named by its row and seed:
the training loss, gradient norm and learning rate per iteration, the validation PSNR and SSIM, and
at each validation the example images (the first validation slice of each task: input, output and
truth, in the modality's display window). The store stays the source of truth: nothing is read back
from the events. Without the ``tensorboard`` package the run trains as usual and says once that it
writes no events. A resumed run drops the events after its checkpoint (``purge_step``), so a curve
never runs twice over the same iterations.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from benchmark.base.vocabulary import display_window

FOLDER = "tensorboard"


def run_folder(store_folder: Path, label: str, seed) -> Path:
    """``<grid folder>/tensorboard/<label> (seed <n>)``: beside the run's store folder."""
    name = re.sub(r"[/\\]+", "_", f"{label} (seed {seed})")
    return Path(store_folder).parent / FOLDER / name


class TrainingEvents:
    """One run's event writer (a no-op without TensorBoard)."""

    _warned = False

    def __init__(self, store_folder: Path, seed, start: int = 0):
        """Events of the run in ``store_folder`` (its row label read from its spec.json, else the
        folder's name), resumed at iteration ``start``."""
        from benchmark.results import store
        self.writer = None
        try:
            label = (store.read_spec(store_folder) or {}).get("label") or Path(store_folder).name
        except store.StoreError:
            label = Path(store_folder).name
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:                           # torch's writer needs the tensorboard package
            if not TrainingEvents._warned:
                print("TensorBoard is not installed: no event files (pip install tensorboard)", file=sys.stderr)
                TrainingEvents._warned = True
            return
        self.writer = SummaryWriter(str(run_folder(store_folder, label, seed)), purge_step=start or None)

    def step(self, iteration: int, loss: float, grad_norm: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, iteration)
            self.writer.add_scalar("train/grad_norm", grad_norm, iteration)
            self.writer.add_scalar("train/lr", lr, iteration)

    def validation(self, iteration: int, psnr: float, ssim: float, examples: list[tuple[str, str, tuple]]) -> None:
        """``examples``: (task, modality, (input, output, truth) in physical units) per task."""
        if self.writer is None:
            return
        self.writer.add_scalar("validation/psnr", psnr, iteration)
        self.writer.add_scalar("validation/ssim", ssim, iteration)
        for task, modality, images in examples:
            low, high = display_window(images[2], modality)
            row = np.concatenate([np.clip((np.asarray(a, dtype=np.float64) - low) / (high - low), 0, 1)
                                  for a in images], axis=1)                  # input | output | truth
            self.writer.add_image(f"validation/{task} (input | output | truth)", row[None].astype(np.float32),
                                  iteration, dataformats="CHW")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
