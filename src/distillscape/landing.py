"""Where one step on a distilled batch lands on the TRUE task's cost surface, quantified.

The claim under test: one gradient step on the distilled batch does not merely make early-training
progress, it lands in (or next to) a minimum of the true task. For M sampled inits and their landings
we measure, on the true task (cross-entropy on real data):

- loss and accuracy on train (a fixed subsample) and test, at the init, at the landing, and at the
  direct minimum (the network trained on the real data, saved by distillscape-distill / -train);
- the gradient norm at the landing relative to the init (near a minimum it is small);
- "polish": keep training on the real data from the landing for P SGD steps; how far that moves
  relative to the length of the one step, and how much loss it still removes;
- loss barriers on straight lines landing -> polished and landing -> direct minimum (the highest
  point of the path above the straight line between its two end losses; 0 when the path is convex);
- curvature: the Hessian eigenvalue of largest magnitude (power iteration on Hessian-vector products;
  at and near a minimum that is the top eigenvalue) and the Hessian trace (Hutchinson's estimator).
- the direct-training trajectory (the reading of Yang et al., ICML 2024: distilled data encodes early
  training): train on the real data from the SAME init (the polish optimizer) and compare the landing
  with that run at checkpoints t in `trajectory_steps` (0 = the init): how many steps the run needs to
  reach the landing's train loss, at which t its test predictions agree most with the landing's (and
  how much), how much they agree at the last checkpoint, and which checkpoint is nearest in parameter
  space. Early training predicts a match at small t, agreement highest there (at the checkpoint of
  equal loss) and falling as training goes on; a landing in a minimum agrees most with the late
  checkpoints.

The same statistics are computed for batches that were not distilled, so numbers can be read against
something: `random_real` (one step on as many class-balanced random training images, hard labels, its
own learning rate tuned on val) and `random_synthetic` (noise images with random hard labels, the
distilled learning rate). Every kind starts from the SAME inits; each baseline landing gets its own
random batch.

Outputs (written by `tasks/landing.py`):

landing_stats.json::

    {"dataset": str, "arch": str, "distilled": str, "inner_loss": str, "settings": {...analysis config},
     "lr": {kind: float},                                 # inner learning rate(s) used, mean over groups
     "direct_minimum": {stat: float},                     # train/test loss+acc, grad_norm, top_eig, trace
     "kinds": {kind: {stat: {"mean": float, "std": float, "n": int, "nonfinite": int}}},
     "trajectory": {"steps": [int], "train_loss": [float], "test_acc": [float],  # the direct run, mean
                    "agreement": {kind: [float]}, "distance": {kind: [float]}}}  # landing vs checkpoint, mean

  kind is one of KINDS, stat one of STATS (below). n counts the finite values averaged; `nonfinite`
  counts landings whose value was inf/nan (a diverged step), left out of mean and std.
landing_stats.csv: one row per (kind, landing) with every stat; cells are empty where a stat was
  computed on fewer landings (polish and curvature use the first `polish_inits` / `curvature_inits`).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import grad, jvp, vmap

from .config import LandingConfig
from .distill import label_targets
from .inner import InnerLoop, evaluate_stack
from .params import Params, as_stack, flat_stack, head, interpolate, stack_len  # noqa: F401  (the stack form of landings)
from .seeds import generator
from .stats import describe, precision_difference, precision_summary

KINDS = ("distilled", "random_real", "random_synthetic")

# stat -> what it is; the order is the order of tables and of the CSV columns.
STATS = {
    "init_train_loss": "true-task train loss at the init",
    "init_train_acc": "train accuracy at the init",
    "init_test_loss": "test loss at the init",
    "init_test_acc": "test accuracy at the init",
    "landing_train_loss": "train loss after the step",
    "landing_train_acc": "train accuracy after the step",
    "landing_test_loss": "test loss after the step",
    "landing_test_acc": "test accuracy after the step",
    "step_length": "||landing - init||",
    "grad_norm_init": "||grad train loss|| at the init",
    "grad_norm_landing": "||grad train loss|| at the landing",
    "grad_norm_ratio": "grad_norm_landing / grad_norm_init",
    "polished_train_loss": "train loss after polishing",
    "polished_test_acc": "test accuracy after polishing",
    "polish_distance": "||polished - landing||",
    "polish_distance_ratio": "polish_distance / step_length",
    "polish_loss_drop": "landing_train_loss - polished_train_loss",
    "barrier_to_polished": "train-loss barrier on landing -> polished",
    "barrier_to_direct": "train-loss barrier on landing -> direct minimum",
    "top_eig_init": "top Hessian eigenvalue (largest |.|) at the init",
    "top_eig_landing": "top Hessian eigenvalue (largest |.|) at the landing",
    "trace_init": "Hessian trace (Hutchinson) at the init",
    "trace_landing": "Hessian trace (Hutchinson) at the landing",
    "steps_to_match": "direct-training steps from the same init to reach the landing's train loss (inf: not within the last checkpoint)",
    "agreement_peak": "highest test-prediction agreement of the landing with a direct-training checkpoint",
    "agreement_peak_step": "the checkpoint step of that highest agreement",
    "agreement_at_match": "test-prediction agreement with the checkpoint of steps_to_match (nan when none)",
    "agreement_last": "test-prediction agreement with the last direct-training checkpoint",
    "agreement_drop": "agreement_peak - agreement_last: how far agreement falls after its peak (per landing)",
    "nearest_step": "the direct-training checkpoint nearest to the landing in parameter space",
    "nearest_distance_ratio": "distance to that checkpoint / step_length (<= 1: the init is checkpoint 0)",
}
CURVES = ("agreement", "distance")  # per landing and checkpoint, kept as curve/<name> beside the stats
DIRECT_STATS = ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm", "top_eig", "trace")


# -- straight lines between stacks -------------------------------------------------------------------
def barrier(path_losses: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Loss barrier of paths sampled at `alphas` (first 0, last 1): max over the path of the loss minus
    the straight line between the two end losses. path_losses [M, A] -> [M]; >= 0, 0 for convex paths."""
    if alphas[0] != 0 or alphas[-1] != 1:
        raise ValueError("barrier needs the path sampled at both ends (alphas[0] = 0, alphas[-1] = 1)")
    line = torch.outer(path_losses[:, 0], 1 - alphas) + torch.outer(path_losses[:, -1], alphas)
    return (path_losses - line).amax(dim=1)


# -- the true task ---------------------------------------------------------------------------------
class TrueTask:
    """Mean cross-entropy of stacks of models on fixed real data (x, y), with its gradient and
    Hessian-vector products; the data is processed in chunks of `data_chunk` examples and the models
    vmapped in chunks of `init_chunk` (None: all at once). precision: what `evaluate` and `predictions` run
    their forwards in (bf16: bfloat16, float32 loss sums); gradients and Hessian-vector products are fp32."""

    def __init__(self, loop: InnerLoop, x: torch.Tensor, y: torch.Tensor, data_chunk: int = 1000,
                 init_chunk: int | None = None, precision: str = "fp32"):
        self.loop, self.x, self.y = loop, x, y
        self.data_chunk, self.init_chunk, self.precision = data_chunk, init_chunk, precision

    def __len__(self) -> int:
        return len(self.y)

    @property
    def names(self) -> list[str]:
        """The parameter order of flat vectors (a `curvature.Objective`)."""
        return self.loop.names

    def _chunks(self):
        for i in range(0, len(self.y), self.data_chunk):
            yield self.x[i:i + self.data_chunk], self.y[i:i + self.data_chunk]

    def _sum_loss(self, params: Params, x, y) -> torch.Tensor:
        return F.cross_entropy(self.loop.forward(params, x), y, reduction="sum")

    def evaluate(self, stack: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """(accuracy [M], mean loss [M])."""
        return evaluate_stack(self.loop, stack, self.x, self.y, self.data_chunk, self.init_chunk, self.precision)

    @torch.no_grad()
    def predictions(self, stack: Params) -> torch.Tensor:
        """Predicted classes [M, N] of every model of the stack."""
        return torch.cat([self.loop.forward_models(stack, x, self.init_chunk, self.precision).argmax(-1)
                          for x, _ in self._chunks()], dim=1)

    def grad(self, stack: Params) -> Params:
        """Gradient of the mean loss for every model of the stack."""
        g = vmap(grad(self._sum_loss), in_dims=(0, None, None), chunk_size=self.init_chunk)
        total = None
        for x, y in self._chunks():
            part = g(stack, x, y)
            total = part if total is None else {k: total[k] + part[k] for k in total}
        return {k: v / len(self) for k, v in total.items()}

    def hvp(self, stack: Params, vecs: Params) -> Params:
        """H v for every model of the stack (each with its own v): forward-over-reverse, jvp of grad."""
        def one(params, v, x, y):
            return jvp(lambda p: grad(self._sum_loss)(p, x, y), (params,), (v,))[1]

        h = vmap(one, in_dims=(0, 0, None, None), chunk_size=self.init_chunk)
        total = None
        for x, y in self._chunks():
            part = h(stack, vecs, x, y)
            total = part if total is None else {k: total[k] + part[k] for k in total}
        return {k: v / len(self) for k, v in total.items()}

    def path_losses(self, a: Params, b: Params, alphas: torch.Tensor) -> torch.Tensor:
        """Mean loss [M, A] along the straight lines a -> b of every model pair."""
        return torch.stack([self.evaluate(interpolate(a, b, float(t)))[1] for t in alphas], dim=1)


# -- curvature ---------------------------------------------------------------------------------------
HVP = Callable[[torch.Tensor], torch.Tensor]  # flat [M, D] -> flat [M, D]


def top_eigenvalue(hvp: HVP, shape: tuple[int, int], iters: int = 100, tol: float = 1e-4,
                   generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Power iteration, batched over M symmetric operators: the eigenvalue of largest magnitude of
    each (sign kept, as the Rayleigh quotient of the converged vector). Stops when every estimate
    changed by less than tol (relative) in one iteration, or after `iters`."""
    v = torch.randn(shape, generator=generator).to(device)
    v = v / v.norm(dim=1, keepdim=True)
    lam = torch.full((shape[0],), float("nan"), device=device)
    for _ in range(iters):
        hv = hvp(v)
        new = (v * hv).sum(dim=1)  # Rayleigh quotient of the unit vector v
        v = hv / hv.norm(dim=1, keepdim=True).clamp_min(1e-30)
        done = torch.all((new - lam).abs() <= tol * new.abs())
        lam = new
        if done:
            break
    return lam


def rademacher(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).float().to(device)


def hutchinson_trace(hvp: HVP, shape: tuple[int, int], probes: int = 20,
                     generator: torch.Generator | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hutchinson's estimator tr H = E[z^T H z], z Rademacher, for M operators at once: (mean over
    `probes` probes [M], its standard error [M]). All probes go through `hvp` in one call, which
    therefore sees [probes * M, D] (probe-major: row p * M + m is probe p of operator m)."""
    m, d = shape
    z = rademacher((probes, m, d), generator, device)
    est = (z * hvp(z.reshape(probes * m, d)).reshape(probes, m, d)).sum(dim=2)
    stderr = est.std(dim=0) / math.sqrt(probes) if probes > 1 else torch.full_like(est[0], float("nan"))
    return est.mean(dim=0), stderr


def curvature(task: TrueTask, stack: Params, iters: int, tol: float, probes: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Top Hessian eigenvalue [M] and Hutchinson trace [M] of the task's loss at every model of a stack."""
    names = task.loop.names
    stack = {k: stack[k] for k in names}
    shape = (stack_len(stack), sum(stack[k][0].numel() for k in names))
    device = next(iter(stack.values())).device

    def hvp_on(s: Params):
        return lambda v: flat_stack(task.hvp(s, as_stack(v, s, names)), names)

    top = top_eigenvalue(hvp_on(stack), shape, iters, tol, generator, device)
    # the probes are batched: every model repeated `probes` times, probe-major, vmapped in one go
    tiled = {k: v.repeat(probes, *[1] * (v.dim() - 1)) for k, v in stack.items()}
    trace, _ = hutchinson_trace(hvp_on(tiled), shape, probes, generator, device)
    return top, trace


# -- polish: keep training on the true task -------------------------------------------------------
def sgd_checkpoints(loop: InnerLoop, stack: Params, x: torch.Tensor, y: torch.Tensor, checkpoints: list[int],
                    lr: float, momentum: float, batch_size: int, generator: torch.Generator,
                    init_chunk: int | None = None) -> list[Params]:
    """One run of minibatch SGD (heavy-ball momentum) on the real training data from every model of
    the stack at once, returning the stack after each of `checkpoints` steps (sorted; 0 = the start).
    All models see the same minibatches (each drawn without replacement; a batch_size >= len(y) is
    full-batch gradient descent)."""
    def mean_loss(params, xb, yb):
        return F.cross_entropy(loop.forward(params, xb), yb)

    g = vmap(grad(mean_loss), in_dims=(0, None, None), chunk_size=init_chunk)
    stack = {k: v.clone() for k, v in stack.items()}
    velocity = {k: torch.zeros_like(v) for k, v in stack.items()}
    out, done = [], 0
    for target in checkpoints:
        for _ in range(target - done):
            idx = torch.randperm(len(y), generator=generator)[:batch_size].to(y.device)
            grads = g(stack, x[idx], y[idx])
            for k in stack:
                velocity[k] = momentum * velocity[k] + grads[k]
                stack[k] = stack[k] - lr * velocity[k]
        done = target
        out.append({k: v.clone() for k, v in stack.items()})
    return out


def polish(loop: InnerLoop, stack: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
           momentum: float, batch_size: int, generator: torch.Generator, init_chunk: int | None = None) -> Params:
    """`steps` of minibatch SGD (heavy-ball momentum) on the real training data from every model of
    the stack (see sgd_checkpoints)."""
    return sgd_checkpoints(loop, stack, x, y, [steps], lr, momentum, batch_size, generator, init_chunk)[0]


def first_match(run_losses: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Index of the first checkpoint at which each run's loss is at or below its target: run_losses
    [M, T], target [M] -> [M]; T where no checkpoint reaches it."""
    t = run_losses.shape[1]
    reached = run_losses <= target[:, None]
    return torch.where(reached, torch.arange(t, device=run_losses.device), t).amin(dim=1)


def steps_to_match(run_losses: torch.Tensor, steps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """First checkpoint step at which each run's loss is at or below its target: run_losses [M, T]
    (checkpoints `steps` [T], ascending), target [M] -> [M]; inf where no checkpoint reaches it."""
    padded = torch.cat([steps.double(), torch.tensor([math.inf], dtype=torch.float64)])
    return padded[first_match(run_losses, target)]


# -- batches that were not distilled ---------------------------------------------------------------
def random_real_batches(dm, per_class: int, n: int, inner_loss: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n class-balanced random real batches (per_class images of each class, hard labels):
    images [n, B, C, H, W], targets [n, B, classes]."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = zip(*(dm.class_balanced_sample(per_class, g) for _ in range(n)))
    targets = [label_targets(y, dm.num_classes, inner_loss, hard=True) for y in ys]
    return torch.stack(xs), torch.stack(targets)


def random_synthetic_batches(n: int, batch: int, image_shape, num_classes: int, inner_loss: str,
                             seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n batches of standard-normal noise images (what distillation starts from) with uniformly random
    hard labels: images [n, batch, C, H, W], targets [n, batch, classes]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, batch, *image_shape, generator=g)
    y = torch.randint(0, num_classes, (n, batch), generator=g)
    return x, label_targets(y, num_classes, inner_loss, hard=True)


# -- everything together -----------------------------------------------------------------------------
# The analysis settings are the validated config section itself (conf/analysis/landing.yaml).
Settings = LandingConfig


class LandingAnalysis:
    """Statistics of landings on the true task, given the train subsample, the test data, the full
    training data (for polishing) and the direct minimum."""

    def __init__(self, loop: InnerLoop, train: TrueTask, test: TrueTask, polish_data: tuple[torch.Tensor, torch.Tensor],
                 direct: Params, s: Settings):
        self.loop, self.train, self.test, self.polish_data, self.s = loop, train, test, polish_data, s
        n_curv = len(train) if s.curvature_examples is None else min(s.curvature_examples, len(train))
        self.curv_task = TrueTask(loop, train.x[:n_curv], train.y[:n_curv], s.data_chunk, s.init_chunk)
        self.direct = {k: v.unsqueeze(0) for k, v in direct.items()}  # a stack of one
        self.alphas = torch.linspace(0, 1, s.barrier_points, device=train.x.device)

    def _gen(self, stream: str) -> torch.Generator:
        return generator(self.s.seed, "analysis", stream)

    def grad_norm(self, stack: Params) -> torch.Tensor:
        return flat_stack(self.train.grad(stack), self.loop.names).norm(dim=1)

    def point(self, stack: Params, where: str | None, n_curvature: int) -> dict[str, torch.Tensor]:
        """Loss and accuracy on train and test, gradient norm (all models) and curvature (the first
        n_curvature models) at a stack; keys as in STATS for where = init / landing, bare for None."""
        pre, suf = (f"{where}_", f"_{where}") if where else ("", "")
        out = {}
        for split, task in (("train", self.train), ("test", self.test)):
            out[f"{pre}{split}_acc"], out[f"{pre}{split}_loss"] = task.evaluate(stack)
        out[f"grad_norm{suf}"] = self.grad_norm(stack)
        if n_curvature:
            out[f"top_eig{suf}"], out[f"trace{suf}"] = curvature(
                self.curv_task, head(stack, n_curvature), self.s.power_iters, self.s.power_tol, self.s.hutchinson_probes, self._gen("curvature"))
        return out

    def direct_minimum(self) -> dict[str, float]:
        stats = self.point(self.direct, None, 1)
        return {k: stats[k].item() for k in DIRECT_STATS}

    def at_inits(self, inits: Params) -> dict[str, torch.Tensor]:
        """Statistics at the inits, computed once and shared by every kind (all start from them)."""
        return self.point(inits, "init", min(self.s.curvature_inits, stack_len(inits)))

    def trajectory(self, inits: Params, count: int | None = None) -> dict[str, object]:
        """The direct-training run from the first `trajectory_inits` (or `count`) inits, at `trajectory_steps`
        (computed once and shared by every kind, like the statistics at the inits): per checkpoint
        its train loss [T, P], test accuracy [T, P], test predictions [T, P, N] and flat weights [T, P, D]."""
        s, names = self.s, self.loop.names
        p = min(s.trajectory_inits if count is None else count, stack_len(inits))
        steps = sorted({0, *s.trajectory_steps})
        states = sgd_checkpoints(self.loop, head(inits, p), *self.polish_data, steps, s.polish_lr, s.polish_momentum,
                                 s.polish_batch_size, self._gen("trajectory"), s.init_chunk)
        out = {"steps": torch.tensor(steps), "train_loss": [], "test_acc": [], "predictions": [], "weights": []}
        for st in states:
            out["train_loss"].append(self.train.evaluate(st)[1])
            out["test_acc"].append(self.test.evaluate(st)[0])
            out["predictions"].append(self.test.predictions(st))
            out["weights"].append(flat_stack(st, names))
        return {k: v if k == "steps" else torch.stack(v) for k, v in out.items()}

    def versus_trajectory(self, landed: Params, step_length: torch.Tensor, landing_train_loss: torch.Tensor,
                          traj: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The landings of the first P inits against the direct-training run from each of those inits."""
        steps = traj["steps"]
        p = traj["weights"].shape[1]
        if not p:
            return {}
        first = head(landed, p)
        # [P, T] each, small: the rest is bookkeeping on the CPU (steps is a CPU tensor)
        agree = (self.test.predictions(first)[None] == traj["predictions"]).float().mean(dim=2).T.cpu()
        dist = (flat_stack(first, self.loop.names)[None] - traj["weights"]).norm(dim=2).T.cpu()
        step_length, landing_train_loss = step_length.cpu(), landing_train_loss.cpu()
        peak, at = agree.max(dim=1)
        nearest, where = dist.min(dim=1)
        run_losses, target = traj["train_loss"].T.cpu(), landing_train_loss[:p]
        # agreement at the matched checkpoint; the extra nan column stands for "never matched"
        at_match = torch.cat([agree, torch.full((p, 1), math.nan)], dim=1).gather(
            1, first_match(run_losses, target)[:, None])[:, 0]
        return {"steps_to_match": steps_to_match(run_losses, steps, target), "agreement_peak": peak,
                "agreement_peak_step": steps[at].double(),
                "agreement_at_match": at_match, "agreement_last": agree[:, -1], "agreement_drop": peak - agree[:, -1],
                "nearest_step": steps[where].double(), "nearest_distance_ratio": nearest / step_length[:p],
                "curve/agreement": agree, "curve/distance": dist}

    def landings(self, inits: Params, landed: Params, at_inits: dict[str, torch.Tensor],
                 traj: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Every stat of STATS for the landings of `inits` (per landing; polish and curvature ones
        for the first `polish_inits` / `curvature_inits` only)."""
        s, names, m = self.s, self.loop.names, stack_len(inits)
        out = dict(at_inits)
        out.update(self.point(landed, "landing", min(s.curvature_inits, m)))
        out["step_length"] = (flat_stack(landed, names) - flat_stack(inits, names)).norm(dim=1)
        out["grad_norm_ratio"] = out["grad_norm_landing"] / out["grad_norm_init"]

        p = min(s.polish_inits, m)
        if p and s.polish_steps:
            first = head(landed, p)
            polished = polish(self.loop, first, *self.polish_data, s.polish_steps, s.polish_lr, s.polish_momentum,
                              s.polish_batch_size, self._gen("polish"), s.init_chunk)
            _, out["polished_train_loss"] = self.train.evaluate(polished)
            out["polished_test_acc"], _ = self.test.evaluate(polished)
            out["polish_distance"] = (flat_stack(polished, names) - flat_stack(first, names)).norm(dim=1)
            out["polish_distance_ratio"] = out["polish_distance"] / out["step_length"][:p]
            out["polish_loss_drop"] = out["landing_train_loss"][:p] - out["polished_train_loss"]
            out["barrier_to_polished"] = barrier(self.train.path_losses(first, polished, self.alphas), self.alphas)
        direct = {k: v.expand(m, *v.shape[1:]) for k, v in self.direct.items()}
        out["barrier_to_direct"] = barrier(self.train.path_losses(landed, direct, self.alphas), self.alphas)
        if traj is not None:
            out.update(self.versus_trajectory(landed, out["step_length"], out["landing_train_loss"], traj))
        keep = [*STATS, *(f"curve/{c}" for c in CURVES)]
        return {k: out[k].detach().cpu() for k in keep if k in out}


def precision_certificate(train: TrueTask, test: TrueTask, inits: Params, landed: Params,
                          stats: dict[str, torch.Tensor], count: int, tolerance: float) -> dict:
    """How far the loss and accuracy statistics at the inits and landings, computed in `train.precision`
    (bf16), are from fp32, measured, not assumed: the first `count` inits and their landings evaluated again
    in fp32 on the same data. Per stat (init_/landing_ x train_/test_ x loss/acc): the largest relative loss
    (absolute accuracy) difference over those models, their rank correlation, whether within `tolerance`
    (`stats.precision_summary`: `passed` when every stat is)."""
    count = min(count, stack_len(inits))
    entries = {}
    for where, stack in (("init", head(inits, count)), ("landing", head(landed, count))) if count else ():
        for split, task in (("train", train), ("test", test)):
            exact = TrueTask(task.loop, task.x, task.y, task.data_chunk, task.init_chunk, "fp32").evaluate(stack)
            for metric, value in zip(("acc", "loss"), exact):
                name = f"{where}_{split}_{metric}"
                entries[name] = precision_difference(stats[name][:count], value.cpu(), metric == "loss", tolerance)
    return precision_summary(train.precision, tolerance, entries, inits=count)


def aggregate(values: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """mean / std (Bessel) / n over the finite values of every stat; `nonfinite` counts the rest."""
    keep = ("mean", "std", "n", "nonfinite")
    return {k: {q: d[q] for q in keep} for k, v in values.items() if not k.startswith("curve/")
            for d in [describe(v)]}
