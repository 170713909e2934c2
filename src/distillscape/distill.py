"""DistillModule: the bilevel loop that learns a synthetic batch for one-step training.

Outer step: sample fresh inits -> `inner_steps` of gradient descent on the synthetic batch (learned
images, labels and learning rates) -> cross-entropy of each landing on a real batch -> backprop into
the synthetic batch. Validation and test train held-out inits on the distilled batch with the same
inner procedure and report accuracy over inits.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from .artifacts import Distilled
from .config import DistillConfig, as_settings
from .inner import InitSampler, InnerLoop, evaluate_stack, outer_batching_rule, param_names
from .models import activations_per_example
from .params import Params, head, stack_len
from .protocols import train_with_protocol
from .seeds import seed_for
from .stats import flat_summary, interval95, precision_difference, precision_summary


def label_targets(y: torch.Tensor, num_classes: int, inner_loss: str, hard: bool) -> torch.Tensor:
    """Targets of the inner loss for class indices y.

    mse: one-hot vectors. soft_ce: label *logits*; hard ones put all mass on the class
    (softmax of -1e4 is exactly 0 in float32), learnable ones start soft enough to move.
    """
    onehot = F.one_hot(y, num_classes).float()
    if inner_loss == "mse":
        return onehot
    return torch.where(onehot > 0, 0.0, -1e4) if hard else 4.0 * onehot


class DistillModule(L.LightningModule):
    progress_unit = "outer steps"  # what the progress display counts (tasks/progress.py)

    def __init__(self, net: nn.Module, num_classes: int, image_shape: tuple[int, ...],
                 settings: DistillConfig | Mapping[str, Any], real_images: torch.Tensor | None = None):
        super().__init__()
        self.s = c = as_settings(DistillConfig, settings)
        self.num_classes = num_classes
        self.loop = InnerLoop(net, c.inner_loss, eval_path=c.eval.path)
        self.sampler = InitSampler(net, c.init_scheme)
        n = c.images_per_class * num_classes
        y = torch.arange(num_classes).repeat_interleave(c.images_per_class)
        self.register_buffer("classes", y)
        if c.image_init == "real":
            if real_images is None or real_images.shape[0] != n:
                raise ValueError(f"image_init=real needs {n} real images, class-sorted")
            images = real_images.clone()
        else:
            images = torch.randn(n, *image_shape)
        self.images = nn.Parameter(images)
        targets = label_targets(y, num_classes, c.inner_loss, hard=c.label_mode == "onehot")
        if c.label_mode == "soft":
            self.labels = nn.Parameter(targets)
        else:
            self.register_buffer("labels", targets)
        groups = len(param_names(net)) if c.lr_per_param else 1
        # learned in log space: the rate stays positive and its updates are relative
        self.log_lrs = nn.Parameter(torch.full((c.inner_steps, groups), math.log(c.lr_init)))
        if c.init_mode == "fixed":
            fixed = self.sampler.sample(1, seed=c.fixed_init_seed)
            for k, v in fixed.items():
                self.register_buffer("fixed_init__" + k.replace(".", "__"), v)
        self._eval: dict[str, dict[str, Any]] = {}
        self.precision_certificates: dict[str, dict] = {}  # stage -> the last bf16 evaluation's certificate
        self.first_step = 0  # the step this process started training at (set again on resume)
        self.first_outer_loss: float | None = None  # that step's outer loss, for the at-chance check

    # -- the synthetic batch -------------------------------------------------------------------
    @property
    def lrs(self) -> torch.Tensor:
        return self.log_lrs.exp()

    def fixed_init(self) -> Params | None:
        if self.s.init_mode != "fixed":
            return None
        return {k: getattr(self, "fixed_init__" + k.replace(".", "__")) for k in self.loop.names}

    def land(self, inits: Params, chunk_size: int | None = None) -> Params:
        """One-step (or `inner_steps`) landings of a stack of inits on the current synthetic batch."""
        return self.loop.run_stack(inits, self.images, self.labels, self.lrs,
                                   chunk_size=chunk_size or self.s.init_chunk)

    def training_inits(self) -> Params:
        fixed = self.fixed_init()
        if fixed is not None:
            return fixed
        return self.sampler.sample(self.s.inits_per_step, device=self.device)

    # -- the outer loop ------------------------------------------------------------------------
    def outer_loss(self, inits: Params, x: torch.Tensor, y: torch.Tensor, batching: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy of the landings of `inits` on a real batch, and their accuracy.

        vmap: all inits at once through torch.func; loop: one init at a time with plain autograd.
        Both compute the same function but round differently; which is faster depends on architecture and
        device (`inner.outer_batching_rule` says which one `batching=auto` takes)."""
        if batching == "vmap":
            logits = self.loop.forward_stack(self.land(inits), x)
        else:
            logits = torch.stack([
                self.loop.forward(self.loop.run_autograd({k: v[i].detach().requires_grad_() for k, v in inits.items()}, self.images,
                                                         self.labels, self.lrs), x)
                for i in range(stack_len(inits))])
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[0]))
        return loss, (logits.argmax(-1) == y).float().mean()

    def on_train_start(self):
        self.first_step = self.global_step  # > 0 when resumed: steps/s must count this run's steps only
        # a resumed run keeps the path it started with (one of an earlier release may have been timed): the
        # two paths differ by rounding
        self.batching = getattr(self, "_checkpoint_batching", None) or self.s.batching
        how = "kept from the checkpoint" if getattr(self, "_checkpoint_batching", None) else "distill.batching"
        if self.batching == "auto":
            self.batching = outer_batching_rule(self.loop.net, self.device.type)
            how = f"distill.batching=auto: the rule for {type(self.loop.net).__name__} on {self.device.type}"
        print(f"distillscape: outer steps batched over inits with {self.batching} ({how})")

    def on_save_checkpoint(self, checkpoint):
        checkpoint["distillscape_batching"] = getattr(self, "batching", None)

    def on_load_checkpoint(self, checkpoint):
        self._checkpoint_batching = checkpoint.get("distillscape_batching")
        self.first_step = checkpoint.get("global_step", 0)

    def computed_with(self, device_type: str) -> dict[str, Any]:
        """How the numbers were computed on `device_type`, for the run's records: the outer step's path, the
        path that evaluates the models, the device kind and torch's thread count (the CPU kernels are
        deterministic for one thread count; another count may round differently)."""
        outer = getattr(self, "batching", None) or getattr(self, "_checkpoint_batching", None)
        example = torch.zeros(1, *self.images.shape[1:], device=device_type)
        return {"outer_batching": outer, "eval_path": self.loop.eval_path_for(example),
                "device": device_type, "torch_threads": torch.get_num_threads()}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss, acc = self.outer_loss(self.training_inits(), x, y, getattr(self, "batching", "vmap"))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"outer loss became {loss.item()} at step {self.global_step}: the inner learning rate "
                f"({self.lrs.detach().flatten().tolist()}) or the outer rates are too large; lower "
                f"distill.lr_init or distill.optim.* and rerun")
        if self.global_step == self.first_step:
            self.first_outer_loss = loss.item()
        self.log_dict({"train/outer_loss": loss, "train/outer_acc": acc,
                       "train/inner_lr": self.lrs.detach().mean()}, prog_bar=True)
        return loss

    def outer_groups(self) -> list[dict]:
        """What the outer optimizer learns, at which rate (a method of matching.py learns other things)."""
        o = self.s.optim
        groups = [{"params": [self.images], "lr": o.lr_images},
                  {"params": [self.log_lrs], "lr": o.lr_lrs}]
        if isinstance(self.labels, nn.Parameter):
            groups.append({"params": [self.labels], "lr": o.lr_labels})
        return groups

    def configure_optimizers(self):
        o = self.s.optim
        opt = torch.optim.Adam(self.outer_groups(), betas=tuple(o.betas))
        if o.schedule == "constant":
            return opt
        # cosine decay of every outer rate to 0 over the run: the synthetic batch settles instead of jittering
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.s.steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation over held-out inits --------------------------------------------------------
    def eval_inits(self, stage: str) -> dict[str, Params]:
        """Held-out inits: val and test draw from seeds no training step uses, and differ from each other."""
        n = self.s.val_inits if stage == "val" else self.s.eval_inits
        seed = seed_for(self.s.eval_seed, "eval", "val_inits" if stage == "val" else "test_inits")
        random = self.sampler.sample(n, seed=seed, device=self.device)
        fixed = self.fixed_init()
        if fixed is None:
            return {"onestep": random}
        return {"onestep": fixed, "onestep_random_init": random}

    def _eval_start(self, stage: str) -> None:
        # Lightning evaluates under inference mode; the inner step still needs its own gradients.
        with torch.inference_mode(False), torch.enable_grad():
            images, labels, lrs = (t.detach().clone() for t in (self.images, self.labels, self.lrs))
            self._eval = {}
            for name, inits in self.eval_inits(stage).items():
                landed = self.loop.run_stack(inits, images, labels, lrs, chunk_size=self.s.init_chunk)
                self._eval[name] = {"landed": {k: v.detach() for k, v in landed.items()},
                                    "correct": 0, "loss": 0.0, "n": 0}
            e = self.s.eval
            if e.protocol != "one_step":  # the chosen protocol from the same held-out inits, beside one step
                inits = self.eval_inits(stage)["onestep_random_init" if self.fixed_init() is not None else "onestep"]
                landed = train_with_protocol(self.loop, inits, images, labels, lrs, e, chunk_size=self.s.init_chunk,
                                             seed=seed_for(self.s.eval_seed, "eval", "minibatch_order"))
                self._eval[e.protocol] = {"landed": landed, "correct": 0, "loss": 0.0, "n": 0}

    def _eval_step(self, batch) -> None:
        x, y = batch
        e = self.s.eval
        for state in self._eval.values():
            acc, loss = evaluate_stack(self.loop, state["landed"], x, y, batch_size=len(y),
                                       chunk_size=self.s.init_chunk, precision=e.precision)
            state["correct"] = state["correct"] + acc * len(y)
            state["loss"] = state["loss"] + loss * len(y)
            state["n"] += len(y)
            if e.precision != "fp32" and e.precision_inits:  # the certificate's sample, again in fp32
                sample = head(state["landed"], min(e.precision_inits, stack_len(state["landed"])))
                acc, loss = evaluate_stack(self.loop, sample, x, y, batch_size=len(y), chunk_size=self.s.init_chunk)
                state["fp32_correct"] = state.get("fp32_correct", 0) + acc * len(y)
                state["fp32_loss"] = state.get("fp32_loss", 0) + loss * len(y)

    def precision_certificate(self) -> dict | None:
        """How far this evaluation's per-model accuracy and loss, computed in distill.eval.precision (bf16),
        are from fp32 on its first precision_inits models (`stats.precision_summary`); None in fp32."""
        e = self.s.eval
        if e.precision == "fp32":
            return None
        entries, count = {}, 0
        for name, state in self._eval.items():
            if "fp32_correct" not in state:
                continue
            count = len(state["fp32_correct"])
            for metric, low, exact in (("acc", state["correct"], state["fp32_correct"]),
                                       ("loss", state["loss"], state["fp32_loss"])):
                entries[f"{name}_{metric}"] = precision_difference((low[:count] / state["n"]).cpu(),
                                                                   (exact / state["n"]).cpu(), metric == "loss",
                                                                   e.precision_tolerance)
        return precision_summary(e.precision, e.precision_tolerance, entries, inits=count)

    def _eval_end(self, stage: str) -> dict[str, float]:
        metrics = {}
        for name, state in self._eval.items():
            acc = state["correct"] / state["n"]
            metrics.update(flat_summary(acc, f"{stage}/{name}_acc"))
            metrics[f"{stage}/{name}_acc_ci95_low"], metrics[f"{stage}/{name}_acc_ci95_high"] = interval95(acc)
            metrics[f"{stage}/{name}_loss"] = (state["loss"] / state["n"]).mean().item()
            metrics[f"{stage}/{name}_inits"] = float(stack_len(state["landed"]))
        certificate = self.precision_certificate()
        if certificate is not None:  # the certificate itself is kept for the run's records (distilled.json)
            self.precision_certificates[stage] = certificate
            metrics[f"{stage}/precision_passed"] = float(certificate["passed"])
            metrics[f"{stage}/precision_max_difference"] = certificate["max_difference"]
        if stage == "test":
            # the test row at the last training step, explicitly (a logged `step` is Lightning's x value): its
            # own step and epoch after fit differ between a run whose fit ran to the end (step 39, epoch 9 of 40
            # steps) and one resumed from its final checkpoint (40, 10), and the resumed history would differ
            self.log_dict({**metrics, "step": float(max(self.global_step - 1, 0))})
        else:
            self.log_dict(metrics)
        self._eval = {}
        return metrics

    def on_validation_epoch_start(self):
        self._eval_start("val")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def on_test_epoch_start(self):
        self._eval_start("test")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self):
        self._eval_end("test")

    # -- the artifact --------------------------------------------------------------------------
    def to_distilled(self, meta: dict[str, Any]) -> Distilled:
        return Distilled(images=self.images.detach().cpu().clone(), labels=self.labels.detach().cpu().clone(),
                         lrs=self.lrs.detach().cpu().clone(), meta=meta,
                         fixed_init={k: v.cpu() for k, v in (self.fixed_init() or {}).items()} or None)


# Bytes a process holds before any of the run's tensors: the interpreter, torch and Lightning themselves
RUNTIME_BYTES = 1 << 30


def memory_estimate(net: nn.Module, image_shape: tuple[int, ...], num_classes: int, n_data: int, real_batch: int,
                    settings: DistillConfig, device_type: str = "cpu") -> dict[str, int]:
    """Bytes a distillation will hold at its peak, from its settings alone (before anything is allocated),
    as parts. float32 throughout: the dataset (raw and normalized copies), the synthetic batch with its
    gradient and Adam's two moments, and per init of an outer step its parameters (init, gradient,
    landing, outer gradient) and the activations of the inner step on the synthetic batch and of the outer
    loss on a real batch, each kept for a backward and (the inner one) a second backward; one init's worth
    where the outer step loops over the inits (batching=loop, or auto's rule on `device_type`)."""
    c = settings
    f32 = 4
    pixels = math.prod(image_shape)
    n_syn = c.images_per_class * num_classes
    params = sum(p.numel() for p in net.parameters())
    acts = activations_per_example(net, torch.zeros(1, *image_shape))
    per_init = 4 * params + c.inner_steps * 3 * acts * n_syn + 2 * acts * real_batch
    batching = c.batching if c.batching != "auto" else outer_batching_rule(net, device_type)
    inits = c.inits_per_step if batching != "loop" else 1
    return {"runtime": RUNTIME_BYTES, "dataset": 2 * n_data * pixels * f32,
            "synthetic_batch": 4 * n_syn * (pixels + num_classes) * f32,
            "outer_step": inits * per_init * f32}
