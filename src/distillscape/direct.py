"""DirectModule: the architecture trained on the full real data.

It is the direct-task baseline that one-step accuracy is compared with, and its weights are the
*direct minimum* of the true task that later analyses (cost surfaces, landings) measure against.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from .artifacts import ArtifactError, read_json, read_tensors, write_json, write_tensors


class DirectModule(L.LightningModule):
    progress_unit = "direct-training steps"  # what the progress display counts (tasks/progress.py)

    def __init__(self, net: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0, metric_prefix: str = ""):
        """metric_prefix: put before every metric name; a distillation's baseline logs `direct/train/loss`
        etc. into the distillation's own W&B run, apart from the distillation's `train/...`."""
        super().__init__()
        self.net, self.lr, self.weight_decay, self.metric_prefix = net, lr, weight_decay, metric_prefix

    def forward(self, x):
        return self.net(x)

    def _step(self, batch, stage: str):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({f"{self.metric_prefix}{stage}/loss": loss, f"{self.metric_prefix}{stage}/acc": acc}, prog_bar=stage != "train",
                      batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def save_direct_minimum(out_dir, net: nn.Module, meta: dict) -> Path:
    """`direct_minimum.safetensors` (the weights) + `direct_minimum.json` (arch, dataset, metrics)."""
    out_dir = Path(out_dir)
    path = write_tensors(out_dir / "direct_minimum.safetensors", dict(net.state_dict()))
    write_json(out_dir / "direct_minimum.json", meta)
    return path


def load_direct_minimum(path, net: nn.Module) -> tuple[nn.Module, dict]:
    """Load weights saved by `save_direct_minimum` (a directory or the .safetensors file) into net."""
    path = Path(path)
    if path.is_dir():
        path = path / "direct_minimum.safetensors"
    state = read_tensors(path)
    meta = read_json(path.with_suffix(".json"))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{path} does not fit arch {type(net).__name__} ({str(e).splitlines()[0]}); "
                            f"it was trained with arch {meta.get('arch', {}).get('_target_', '?')}: "
                            f"use the same arch= or retrain with distillscape-train") from None
    return net, meta
