"""DirectModule: the architecture trained on the full real data.

It is the direct-task baseline that one-step accuracy is compared with, and its weights are the
*direct minimum* of the true task that later analyses (cost surfaces, landings) measure against.
"""
from __future__ import annotations

import math
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


def converge(net: nn.Module, x: torch.Tensor, y: torch.Tensor, grad_tol: float, max_steps: int,
             chunk: int = 1000) -> dict:
    """Train `net` on (x, y) until it is stationary: full-batch L-BFGS (strong Wolfe line search) on the
    mean cross-entropy over all of (x, y), in chunks of `chunk` examples, until the gradient norm is at most
    `grad_tol` or after `max_steps` iterations. Returns the record of direct_minimum.json's "convergence"."""
    device = next(net.parameters()).device
    x, y = x.to(device), y.to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    # one iteration per step (the rule is checked between them), its line search allowed 25 evaluations
    opt = torch.optim.LBFGS(params, lr=1, max_iter=1, max_eval=25, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=0, tolerance_change=0)

    def full_batch():
        opt.zero_grad()
        total = 0.0
        for i in range(0, len(y), chunk):
            loss = F.cross_entropy(net(x[i:i + chunk]), y[i:i + chunk], reduction="sum") / len(y)
            loss.backward()
            total += loss.item()
        return torch.tensor(total)

    def grad_norm() -> float:
        return torch.cat([p.grad.flatten() for p in params]).norm().item()

    was_training = net.training
    net.eval()
    first = full_batch().item()
    start_grad = grad = grad_norm()
    loss, steps = first, 0
    while grad > grad_tol and steps < max_steps:
        opt.step(full_batch)
        steps += 1
        loss, grad = full_batch().item(), grad_norm()
        if not math.isfinite(loss):
            break
    net.train(was_training)
    opt.zero_grad(set_to_none=True)
    return {"rule": f"full-batch L-BFGS on the training split until ||grad of the mean train loss|| <= {grad_tol} "
                    f"or {max_steps} iterations", "converged": grad <= grad_tol, "steps": steps,
            "grad_norm": grad, "train_loss": loss, "grad_norm_before": start_grad, "train_loss_before": first,
            "examples": len(y)}


DIRECT_TRAJECTORY = "direct_trajectory"  # direct training's parameter snapshots, beside direct_minimum.*


class ParameterSnapshots(L.Callback):
    """Direct training's trajectory: the net's state dict at the start (epoch0000) and after every
    `every`-th epoch, as <out_dir>/direct_trajectory/epochNNNN.safetensors (a cost surface's
    sweep.trajectory=direct draws them and takes their principal directions). Earlier files of the
    directory are removed first: the trajectory is one training's."""

    def __init__(self, out_dir, every: int):
        self.dir, self.every = Path(out_dir) / DIRECT_TRAJECTORY, every

    def _save(self, module: "DirectModule", epoch: int) -> None:
        write_tensors(self.dir / f"epoch{epoch:04d}.safetensors", {k: v.detach().cpu() for k, v in module.net.state_dict().items()})

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            for old in self.dir.glob("epoch*.safetensors"):
                old.unlink()
            self._save(pl_module, 0)

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        if trainer.is_global_zero and (epoch % self.every == 0 or epoch == trainer.max_epochs):
            self._save(pl_module, epoch)


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
