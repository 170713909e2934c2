"""The early-training parts of distillscape-landing (analysis.early; what each measures: distillscape.early).

Each part writes <output_dir>/early/<part>.json (its fingerprint inside: a rerun with the same settings
reuses it, another config redoes it) and a figure <part>.png beside landing_stats.json; early.json
gathers them for the report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from ..artifacts import write_json
from ..baseline import tune_random_real_lr
from ..config import ARCH_SCHEMAS, DistillConfig, LandingJob, as_settings
from ..direct import DirectModule
from ..distill import DistillModule, label_targets
from ..early import (DistilledCost, control_agreements, influence, influence_summary, intervals, matched_steps,
                     mixed_batches, nearest_checkpoint, random_subsets, trace_and_top, train_on_subsets)
from ..errors import ConfigError
from ..inner import InitSampler, InnerLoop, evaluate_stack
from ..landing import LandingAnalysis, random_real_batches
from ..curvature import points_per_pass
from ..models import activations_per_example, build_net, init_parameters_
from ..params import detached, flat_stack, stack_len, unflatten_stack
from ..plots import controls_figure, curvature_along_figure, fair_figure, influence_figure, mixing_figure, recognition_figure
from ..resume import finished, fingerprint, mark_finished
from ..run import Run
from ..seeds import generator, seed_for
from ..stats import describe, interval
from .common import console


@dataclass
class Early:
    """What every part needs: the run, its inner loop and sampler, the data, the landing analysis (its train
    subsample and test data), the held-out inits (the first analysis.early_inits) and the settings."""
    s: LandingJob
    run: Run
    loop: InnerLoop
    sampler: InitSampler
    dm: object
    analysis: LandingAnalysis
    inits: dict
    device: torch.device

    @property
    def a(self):
        return self.s.analysis

    def batch(self):
        d = self.run.distilled
        return d.images.to(self.device), d.labels.to(self.device), d.lrs.to(self.device)

    def accuracies(self, landed) -> dict[str, torch.Tensor]:
        """Train (the analysis' subsample) and test accuracy of a stack [M]."""
        return {"train_acc": self.analysis.train.evaluate(landed)[0].cpu(), "test_acc": self.analysis.test.evaluate(landed)[0].cpu()}

    def trajectory(self) -> dict:
        """Direct training from every held-out init (LandingAnalysis.trajectory), once for the parts that use it."""
        if not hasattr(self, "_trajectory"):
            self._trajectory = self.analysis.trajectory(self.inits, count=stack_len(self.inits))
        return self._trajectory

    def distilled_landings(self):
        return self.run.land(self.inits, self.loop, self.a.init_chunk)

    def rate_for(self, per_class: int, stream: str) -> float:
        """The rate of `per_class` random real images per class with hard labels, tuned on val (baseline.py)."""
        return tune_random_real_lr(self.loop, self.sampler, self.dm, per_class, self.run.distilled.lrs.shape[0],
                                   list(self.s.baseline.lr_grid), self.s.baseline.tune_inits,
                                   seed=seed_for(self.a.seed, "analysis", stream), device=self.device)

    def one_step(self, x, targets, lrs):
        """Landings of the inits, each on its own batch (x [M, B, ...])."""
        with torch.enable_grad():
            return detached(self.loop.run_stack(self.inits, x, targets, lrs, self.a.init_chunk, batched_data=True))


def check_early(s: LandingJob, run: Run, dm=None) -> None:
    """Refuse, in one line and before any work, early parts this run or dataset cannot do."""
    a = s.analysis
    if not a.early:
        return
    if run.is_rl:
        raise ConfigError(f"analysis.early={list(a.early)} needs a run distilled from a dataset; {run.path} is an RL "
                          f"run: leave analysis.early empty")
    if dm is None:  # the data is checked once it is loaded
        return
    smallest = min(int((dm.train_y == c).sum()) for c in range(dm.num_classes))
    if "mixing" in a.early and max(a.mixing_per_class) > smallest:
        raise ConfigError(f"analysis.mixing_per_class={list(a.mixing_per_class)} asks for {max(a.mixing_per_class)} "
                          f"real images of a class that has {smallest} in the training split: keep every k <= {smallest}")
    per_class, rem = divmod(run.distilled.images.shape[0], run.num_classes)
    if "fair_baselines" in a.early and (rem or per_class > smallest):
        raise ConfigError(f"analysis.early=fair_baselines needs a class-balanced real batch of the distilled batch's "
                          f"size ({run.distilled.images.shape[0]} images for {run.num_classes} classes): leave "
                          f"fair_baselines out of analysis.early for this run")


# -- the parts ---------------------------------------------------------------------------------------------------
def part_influence(e: Early, out: Path) -> dict:
    images, labels, lrs = e.batch()
    test = e.analysis.test
    result = influence(e.loop, e.inits, images, labels, lrs, test.x, test.y, e.a.data_chunk, e.a.init_chunk)
    summary = influence_summary(result, labels.cpu(), test.y.cpu(), e.a.influence_top)
    influence_figure(summary, out / "influence.png")
    return summary


def part_mixing(e: Early, out: Path) -> dict:
    """k real images per class added to the distilled batch (one-hot labels scaled like the distilled ones,
    the distilled rate) against the same real images alone (hard labels, a rate tuned on val)."""
    images, labels, lrs = e.batch()
    m, steps = stack_len(e.inits), lrs.shape[0]
    rows = []
    for k in e.a.mixing_per_class:
        if k == 0:
            mixed, alone, lr = e.accuracies(e.distilled_landings()), None, None
        else:
            x, hard = random_real_batches(e.dm, k, m, e.loop.loss, seed=seed_for(e.a.seed, "analysis", "mixing_real") + k)
            y = torch.arange(e.run.num_classes).repeat_interleave(k).expand(m, -1)  # class_balanced_sample is class-sorted
            mx, mt = mixed_batches(images, labels, x.to(e.device), y.to(e.device), e.run.num_classes)
            mixed = e.accuracies(e.one_step(mx, mt, lrs))
            lr = e.rate_for(k, "mixing_tune")
            alone = e.accuracies(e.one_step(x.to(e.device), hard.to(e.device), torch.full((steps, 1), lr, device=e.device)))
        row = {"per_class": k, "real_images": k * e.run.num_classes, "real_lr": lr,
               "mixed": intervals(mixed), "real_alone": intervals(alone) if alone else None}
        if alone:
            row["mixed_minus_alone"] = intervals({s: mixed[s] - alone[s] for s in mixed})
        rows.append(row)
    summary = {"inits": m, "distilled_images": int(images.shape[0]), "rows": rows,
               "labels": "real images' labels: one-hot scaled like the distilled labels (b + a * onehot, a their mean "
                         "margin, b the mean of their other entries); rate: the distilled one"}
    mixing_figure(summary, out / "mixing.png")
    return summary


def part_controls(e: Early, out: Path) -> dict:
    """Accuracy-matched controls from the landings' own inits (see distillscape.early)."""
    a, test, dm = e.a, e.analysis.test, e.dm
    m = stack_len(e.inits)
    traj = e.trajectory()
    landed = e.distilled_landings()
    landing_acc, landing_pred = test.evaluate(landed)[0].cpu(), test.predictions(landed).cpu()
    g = generator(a.seed, "analysis", "control_subsets")
    train_x, train_y = dm.train_x.to(e.device), dm.train_y.to(e.device)
    per_fraction, preds = [], {}
    for f in a.control_fractions:
        size = max(1, round(f * len(train_y)))
        idx = random_subsets(len(train_y), size, m * a.control_models, g).to(e.device)
        stack = {k: v.repeat_interleave(a.control_models, 0) for k, v in e.inits.items()}  # C controls per init
        trained = train_on_subsets(e.loop, stack, train_x[idx], train_y[idx], a.control_steps, a.polish_lr,
                                   a.polish_momentum, a.init_chunk)
        acc = test.evaluate(trained)[0].cpu().view(m, a.control_models)
        preds[f] = test.predictions(trained).cpu().view(m, a.control_models, -1)
        per_fraction.append({"fraction": f, "images": size, "test_acc": interval(acc.mean(1))})
    chosen = min(per_fraction, key=lambda r: abs(r["test_acc"]["mean"] - landing_acc.mean().item()))
    at = nearest_checkpoint(traj["test_acc"].cpu(), landing_acc)
    ckpt_pred = traj["predictions"].cpu()[at, torch.arange(m)]
    ckpt_acc = traj["test_acc"].cpu()[at, torch.arange(m)]
    ag = control_agreements(landing_pred, ckpt_pred, preds[chosen["fraction"]])
    summary = {"inits": m, "controls_per_init": a.control_models, "control_steps": a.control_steps,
               "fractions": per_fraction, "chosen": chosen["fraction"],
               "landing_test_acc": interval(landing_acc), "checkpoint_test_acc": interval(ckpt_acc),
               "checkpoint_step": interval(traj["steps"].double()[at]),
               "agreement": intervals(ag),
               "difference": intervals({"checkpoint_minus_controls": ag["landing_checkpoint"] - ag["landing_controls"],
                                        "landing_minus_among_controls": ag["landing_controls"] - ag["controls_controls"]})}
    controls_figure(summary, out / "controls.png")
    return summary


def learn_labels_and_rates(e: Early, real: torch.Tensor) -> DistillModule:
    """DistillModule on fixed real images (their gradient off: only the soft labels and the rates learn),
    the run's own distillation settings otherwise, for analysis.fair_steps outer steps with a real Trainer."""
    recorded = dict(e.run.meta.get("config", {}).get("distill") or {})
    recorded.pop("_target_", None)
    c = as_settings(DistillConfig, {**recorded, "image_init": "real", "label_mode": "soft", "steps": e.a.fair_steps,
                                    "val_every": e.a.fair_steps, "batching": "vmap", "init_mode": "random"})
    module = DistillModule(e.run.net(), e.run.num_classes, tuple(e.run.meta["image_shape"]), c, real_images=real)
    module.images.requires_grad_(False)  # Adam skips a parameter without a gradient: the images stay the real ones
    fit(e, module, seed_for(e.a.seed, "analysis", "fair_distill"), max_steps=e.a.fair_steps)
    return module


def fit(e: Early, module: L.LightningModule, seed: int, **limits) -> None:
    """Fit a module on the run's data with a quiet Trainer of its own (no logger, checkpoints or validation:
    these networks are measured by the part itself), on the analysis' device, from a seeded global RNG."""
    L.seed_everything(seed, workers=True, verbose=False)
    trainer = L.Trainer(accelerator="gpu" if e.device.type == "cuda" else "cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, **limits)
    trainer.fit(module, e.dm)


def train_directly(e: Early, seed: int) -> dict:
    """One network trained on the whole training split (DirectModule, the run's direct settings), as a stack of one."""
    direct = dict(e.run.meta.get("config", {}).get("direct") or {})
    net = e.run.net()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        init_parameters_(net, e.run.init_scheme)
    module = DirectModule(net, lr=direct.get("lr", 1e-3), weight_decay=direct.get("weight_decay", 0.0))
    fit(e, module, seed, max_epochs=e.a.fair_direct_epochs or direct.get("epochs", 20))
    return {k: v.detach().to(e.device).unsqueeze(0) for k, v in net.named_parameters()}


def part_fair_baselines(e: Early, out: Path) -> dict:
    """What the labels carry against what the images carry: the same random real images with hard labels
    (a tuned rate), with learned soft labels and rates, and the distilled batch; directly trained networks."""
    images, labels, lrs = e.batch()
    classes, per_class = e.run.num_classes, images.shape[0] // e.run.num_classes
    real, real_y = e.dm.class_balanced_sample(per_class, generator(e.a.seed, "analysis", "fair_images"))
    m, steps = stack_len(e.inits), lrs.shape[0]

    def same(x, t, r):  # every init on the same batch
        return e.one_step(x.expand(m, *x.shape), t.expand(m, *t.shape), r)

    hard = label_targets(real_y, classes, e.loop.loss, hard=True).to(e.device)
    lr = e.rate_for(per_class, "fair_tune")
    arms = {"real_hard_labels": e.accuracies(same(real.to(e.device), hard, torch.full((steps, 1), lr, device=e.device)))}
    t0 = time.perf_counter()
    learned = learn_labels_and_rates(e, real)
    console.print(f"fair_baselines: labels and rates of {len(real_y)} real images learned in {time.perf_counter() - t0:.0f} s")
    lx, ll, lr_learned = (t.detach().to(e.device) for t in (learned.images, learned.labels, learned.lrs))
    arms["real_learned_labels"] = e.accuracies(same(lx, ll, lr_learned))
    arms["distilled"] = e.accuracies(e.distilled_landings())
    direct = [e.accuracies(train_directly(e, seed_for(e.a.seed, "analysis", "fair_direct") + i))
              for i in range(e.a.fair_direct_seeds)]
    direct = {k: torch.cat([d[k] for d in direct]) for k in ("train_acc", "test_acc")}
    summary = {"inits": m, "images": len(real_y), "hard_label_lr": lr, "learned_lr": lr_learned.mean().item(),
               "learned_images_unchanged": bool(torch.equal(lx.cpu(), real)),
               "arms": {k: intervals(v) for k, v in arms.items()},
               "direct": {k: {**interval(v), **{q: describe(v)[q] for q in ("min", "max")}} for k, v in direct.items()},
               "direct_seeds": e.a.fair_direct_seeds,
               "labels_carry": intervals({s: arms["real_learned_labels"][s] - arms["real_hard_labels"][s] for s in arms["distilled"]}),
               "images_carry": intervals({s: arms["distilled"][s] - arms["real_learned_labels"][s] for s in arms["distilled"]})}
    fair_figure(summary, out / "fair_baselines.png")
    return summary


class AtEpochs(L.Callback):
    """Measures the module's network after each of `epochs` (counted from 1) with `measure(net)`."""

    def __init__(self, epochs, measure):
        self.epochs, self.measure, self.rows = set(epochs), measure, {}

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch + 1 in self.epochs:
            with torch.no_grad():
                self.rows[trainer.current_epoch + 1] = self.measure(module.net)


def part_recognition(e: Early, out: Path) -> dict:
    """Accuracy on the distilled images, labelled by their soft labels' argmax, of networks trained directly: along
    direct training from the held-out inits (the trajectory's checkpoints), and for other architectures and
    training lengths (DirectModule, the run's direct settings)."""
    a = e.a
    images, labels, _ = e.batch()
    y = labels.argmax(-1)
    traj = e.trajectory()
    like = {k: e.inits[k][0] for k in e.loop.names}
    along = [{"step": int(step), "distilled_acc": interval(evaluate_stack(e.loop, unflatten_stack(traj["weights"][t], like),
                                                                          images, y)[0].cpu()),
              "test_acc": interval(traj["test_acc"][t].cpu())} for t, step in enumerate(traj["steps"].tolist())]
    test_x, test_y = e.analysis.test.x, e.analysis.test.y
    direct = dict(e.run.meta.get("config", {}).get("direct") or {})
    c, h, w = e.run.meta["image_shape"]

    def measure(net):
        dev = next(net.parameters()).device
        return {"distilled_acc": (net(images.to(dev)).argmax(-1) == y.to(dev)).float().mean().item(),
                "test_acc": torch.cat([net(test_x[i:i + a.data_chunk].to(dev)).argmax(-1) for i in range(0, len(test_y), a.data_chunk)])
                .eq(test_y.to(dev)).float().mean().item()}

    archs = []
    for arch in a.recognition_archs:
        seen = []
        for i in range(a.recognition_seeds):
            seed = seed_for(a.seed, "analysis", "recognition") + i
            net = build_net(ARCH_SCHEMAS[arch](), (c, h, w), e.run.num_classes)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                init_parameters_(net, e.run.init_scheme)
            at = AtEpochs(a.recognition_epochs, measure)
            fit(e, DirectModule(net, lr=direct.get("lr", 1e-3), weight_decay=direct.get("weight_decay", 0.0)), seed,
                max_epochs=max(a.recognition_epochs), callbacks=[at])
            seen.append(at.rows)
        for epochs in sorted(a.recognition_epochs):
            archs.append({"arch": arch, "epochs": epochs, **{k: interval(torch.tensor([r[epochs][k] for r in seen]))
                                                              for k in ("distilled_acc", "test_acc")}})
    summary = {"inits": stack_len(e.inits), "images": int(images.shape[0]), "seeds": a.recognition_seeds,
               "along_training": along, "archs": archs}
    recognition_figure(summary, out / "recognition.png")
    return summary


def part_curvature(e: Early, out: Path) -> dict:
    """The true task's Hessian trace and top eigenvalue at every checkpoint of direct training from the held-out
    inits and at their landings (one stack), where the landings fall on that curve (early.matched_steps), and the
    curvature of the distilled batch's own cost at the inits and the landings (early.DistilledCost)."""
    a, names = e.a, e.loop.names
    images, labels, _ = e.batch()
    traj = e.trajectory()
    steps = [int(s) for s in traj["steps"].tolist()]
    t, p = traj["weights"].shape[:2]
    landed = e.distilled_landings()
    like = {k: e.inits[k][0] for k in names}
    # every checkpoint of every init (row t * P + i: step t from init i), then the landings: one stack
    points = unflatten_stack(torch.cat([traj["weights"].reshape(t * p, -1), flat_stack(landed, names)]), like)
    g = generator(a.seed, "analysis", "early_curvature")
    # points per pass: analysis.init_chunk, else the certificate's memory rule on each cost's examples per forward
    acts = activations_per_example(e.loop.net, images[:1])
    true_task = e.analysis.curv_task
    true = trace_and_top(true_task, points, a.early_curvature_probes, a.early_curvature_lanczos_steps, g,
                         a.init_chunk or points_per_pass(min(true_task.data_chunk, len(true_task)), acts))
    own = trace_and_top(DistilledCost(e.loop, images, labels, a.init_chunk),
                        {k: torch.cat([e.inits[k], landed[k]]) for k in names},
                        a.early_curvature_probes, a.early_curvature_lanczos_steps, g,
                        a.init_chunk or points_per_pass(len(images), acts))
    along = {k: true[k][:t * p].view(t, p) for k in ("trace", "top_eig")}
    at_landing = {k: true[k][t * p:] for k in ("trace", "top_eig")}
    summary = {"inits": p, "examples": len(e.analysis.curv_task), "steps": steps, "probes": a.early_curvature_probes,
               "lanczos_steps": a.early_curvature_lanczos_steps, "inner_loss": e.loop.loss,
               "true_task": {"along": [{"step": s, **{k: interval(along[k][i]) for k in along}} for i, s in enumerate(steps)],
                             "landing": intervals(at_landing),
                             # Hutchinson's own noise beside the spread over inits the intervals hold
                             "trace_probe_se": interval(true["trace_se"])},
               "distilled_cost": {"init": intervals({k: own[k][:p] for k in ("trace", "top_eig")}),
                                  "landing": intervals({k: own[k][p:] for k in ("trace", "top_eig")}),
                                  "landing_minus_init": intervals({k: own[k][p:] - own[k][:p] for k in ("trace", "top_eig")})},
               "match": {k: matched_steps(at_landing[k], along[k], steps) for k in ("trace", "top_eig")},
               "per_point": {"checkpoint_trace": along["trace"].tolist(), "checkpoint_top_eig": along["top_eig"].tolist(),
                             "landing_trace": at_landing["trace"].tolist(), "landing_top_eig": at_landing["top_eig"].tolist(),
                             "distilled_cost_trace": own["trace"].view(2, p).tolist(),
                             "distilled_cost_top_eig": own["top_eig"].view(2, p).tolist()}}
    curvature_along_figure(summary, out / "curvature.png")
    return summary


PARTS = {"influence": part_influence, "recognition": part_recognition, "fair_baselines": part_fair_baselines, "mixing": part_mixing,
         "controls": part_controls, "curvature": part_curvature}
# the analysis keys each part depends on beyond those of the landing kinds (and early_inits, shared by all)
PART_KEYS = {"influence": ("influence_top",), "mixing": ("mixing_per_class",),
             "fair_baselines": ("fair_steps", "fair_direct_seeds", "fair_direct_epochs"),
             "controls": ("control_fractions", "control_models", "control_steps"),
             "recognition": ("recognition_archs", "recognition_epochs", "recognition_seeds"),
             "curvature": ("early_curvature_probes", "early_curvature_lanczos_steps")}
EARLY_KEYS = {"early", "early_inits", *(k for keys in PART_KEYS.values() for k in keys)}


def early_parts(e: Early, out: Path, stamp: str) -> dict:
    """Every part of analysis.early, each reused when finished with its fingerprint (the landing kinds' `stamp`
    and its own keys: another part's settings do not redo it); early.json gathers them."""
    results = {}
    for name in e.a.early:
        path = out / "early" / f"{name}.json"
        own = fingerprint(data={"kinds": stamp, "early_inits": e.a.early_inits,
                                **{k: getattr(e.a, k) for k in PART_KEYS[name]}})
        if (done := finished(path, own, on_mismatch="redo")) is not None:
            console.print(f"early {name}: reusing {path}")
            results[name] = done["result"]
            continue
        console.print(f"early {name}: {stack_len(e.inits)} held-out inits ...")
        t0 = time.perf_counter()
        results[name] = PARTS[name](e, out)
        mark_finished(path, own, result=results[name])
        console.print(f"early {name}: done ({time.perf_counter() - t0:.0f} s)")
    if results:
        write_json(out / "early.json", results)
    return results

