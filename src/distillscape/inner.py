"""The inner loop: gradient descent on a synthetic batch, written functionally so it can be
differentiated (into images, labels and learning rates) and batched over many initializations.

Parameters travel as `params.Params` (dicts name -> tensor); a *stack* carries a leading init
dimension, and `torch.func.vmap` maps one inner run over it.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .config import INNER_LOSSES
from .models import channels_last_params, features_channels_last, init_parameters_
from .params import Params, stack_len, unstack

EVAL_PATHS = ("vmap", "channels_last")  # how evaluation runs many models: see InnerLoop.forward_models


def timed(run, device: torch.device) -> float:
    """Seconds of one call of `run` after a warm-up call (waiting for the GPU where there is one):
    how every faster-path-by-measurement choice in the package times its candidates."""
    for _ in range(2):
        t0 = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def inner_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """The loss a model is trained with on the distilled batch.

    mse: squared error to the (soft) label vectors, as in the reference study;
    soft_ce: cross-entropy to softmax(label logits).
    """
    if kind == "mse":
        return F.mse_loss(logits, targets)
    if kind == "soft_ce":
        return torch.sum(-F.softmax(targets, dim=-1) * F.log_softmax(logits, dim=-1), dim=-1).mean()
    raise ValueError(f"unknown inner loss {kind!r}; allowed: {', '.join(INNER_LOSSES)}")


def weighted_inner_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, kind: str) -> torch.Tensor:
    """`inner_loss` with a weight per example, normalized by the weights' sum: weights of ones give
    inner_loss, and a 0 removes an example exactly as leaving it out of the batch does (so one vmapped
    batch of weight vectors runs every leave-one-out step at once, where slicing could not be vmapped)."""
    if kind == "mse":
        per = (logits - targets).pow(2).mean(-1)  # F.mse_loss averages over examples and classes alike
    elif kind == "soft_ce":
        per = torch.sum(-F.softmax(targets, dim=-1) * F.log_softmax(logits, dim=-1), dim=-1)
    else:
        raise ValueError(f"unknown inner loss {kind!r}; allowed: {', '.join(INNER_LOSSES)}")
    return (weights * per).sum() / weights.sum()


def param_names(net: nn.Module) -> list[str]:
    return [n for n, _ in net.named_parameters()]


class InitSampler:
    """Draws random initializations of one architecture as a parameter stack.

    Draws are a pure function of `seed`, so held-out evaluation inits are the same every time.
    """

    def __init__(self, net: nn.Module, scheme: str = "default"):
        self.net = copy.deepcopy(net)
        self.scheme = scheme

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, device=None) -> Params:
        """n inits; with a seed, a fixed draw that leaves the global RNG untouched, without one,
        the next draw of the global RNG (fresh inits every training step, reproducible by seed)."""
        if seed is None:
            return self._draw(n, device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._draw(n, device)

    def _draw(self, n: int, device) -> Params:
        draws: dict[str, list[torch.Tensor]] = {k: [] for k in param_names(self.net)}
        for _ in range(n):
            init_parameters_(self.net, self.scheme)
            for k, p in self.net.named_parameters():
                draws[k].append(p.detach().clone())
        return {k: torch.stack(v).to(device) for k, v in draws.items()}


class InnerLoop:
    """`steps` of gradient descent on (images, targets) from given params, differentiably.

    lrs: tensor [steps, G] of positive learning rates; G = 1 (one rate per step) or one per
    parameter tensor, in `param_names` order.
    """

    def __init__(self, net: nn.Module, loss: str = "mse", eval_path: str = "auto"):
        if loss not in INNER_LOSSES:
            raise ValueError(f"unknown inner loss {loss!r}; allowed: {', '.join(INNER_LOSSES)}")
        self.net, self.loss = net, loss
        self.names = param_names(net)
        self.buffers = dict(net.named_buffers())
        self._activation_bytes: dict[tuple, int] = {}  # per input shape, for eval_chunk
        if eval_path not in ("auto", *EVAL_PATHS):
            raise ValueError(f"eval_path={eval_path!r}; allowed: auto, {', '.join(EVAL_PATHS)}")
        self.eval_path = eval_path
        self._eval_paths: dict[tuple, str] = {}  # per input shape and device, for forward_models (auto)
        self.eval_timings: dict[str, float] = {}

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, (params, self.buffers), (x,))

    def _loss(self, params: Params, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return inner_loss(self.forward(params, x), targets, self.loss)

    def _weighted_loss(self, params: Params, x: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return weighted_inner_loss(self.forward(params, x), targets, weights, self.loss)

    def run(self, params: Params, x: torch.Tensor, targets: torch.Tensor, lrs: torch.Tensor,
            weights: torch.Tensor | None = None) -> Params:
        """Landing of ONE init (unbatched params). Differentiable in x, targets and lrs. `weights` [B]:
        a weight per example of the batch (weighted_inner_loss); None: the plain inner loss."""
        loss = self._loss if weights is None else (lambda p, x, t: self._weighted_loss(p, x, t, weights))
        for t in range(lrs.shape[0]):
            g = grad(loss)(params, x, targets)
            params = {k: params[k] - lrs[t, i if lrs.shape[1] > 1 else 0] * g[k]
                      for i, k in enumerate(self.names)}
        return params

    def run_stack(self, stack: Params, x, targets, lrs, chunk_size: int | None = None,
                  batched_data: bool = False, weights: torch.Tensor | None = None) -> Params:
        """Landings of a stack of inits, vmapped over the init dimension (and over x / targets
        too when `batched_data`: each init trained on its own batch); `weights` [B]: see `run`."""
        d = 0 if batched_data else None
        return vmap(self.run, in_dims=(0, d, d, None, None), chunk_size=chunk_size)(stack, x, targets, lrs, weights)

    def forward_stack(self, stack: Params, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Logits [n_inits, batch, classes] of every model of the stack on the same inputs."""
        return vmap(self.forward, in_dims=(0, None), chunk_size=chunk_size)(stack, x)

    def forward_models(self, stack: Params, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Logits [n_models, batch, classes] for evaluation (no autograd): vmapped over the models, or,
        for nets with conv weights, one model at a time with channels-last weights on cache-sized
        pieces of x, whichever measured faster on the first call for this input shape."""
        key = (tuple(x.shape[1:]), x.device.type)
        if self.eval_path != "auto":
            self._eval_paths[key] = self.eval_path
        elif key not in self._eval_paths:
            self._eval_paths[key] = self._measure_eval_path(stack, x)
        if self._eval_paths[key] == "vmap":
            return self.forward_stack(stack, x, chunk_size or self.eval_chunk(x))
        return self._forward_channels_last(stack, x)

    def _forward_channels_last(self, stack: Params, x: torch.Tensor, piece: int = 128) -> torch.Tensor:
        with features_channels_last(self.net):
            return torch.stack([torch.cat([self.forward(channels_last_params(unstack(stack, i)), x[j:j + piece])
                                           for j in range(0, len(x), piece)]) for i in range(stack_len(stack))])

    def _measure_eval_path(self, stack: Params, x: torch.Tensor) -> str:
        if not any(v.dim() == 5 for v in stack.values()):  # no conv weights (a stack adds a dim): vmap
            return "vmap"
        few = {k: v[:4] for k, v in stack.items()}
        self.eval_timings["vmap"] = timed(lambda: self.forward_stack(few, x), x.device)
        self.eval_timings["channels_last"] = timed(lambda: self._forward_channels_last(few, x), x.device)
        return min(self.eval_timings, key=self.eval_timings.get)

    @torch.no_grad()
    def activation_bytes(self, x: torch.Tensor) -> int:
        """Bytes of all layer outputs of one model's forward on one example like x[0]."""
        total = 0

        def hook(module, inputs, output):
            nonlocal total
            if isinstance(output, torch.Tensor) and not list(module.children()):
                total += output.numel() * output.element_size()

        handles = [m.register_forward_hook(hook) for m in self.net.modules()]
        try:
            self.net(x[:1].to(next(self.net.parameters()).device))
        finally:
            for h in handles:
                h.remove()
        return total

    def eval_chunk(self, x: torch.Tensor, budget_bytes: int = 2 << 30) -> int:
        """How many models to vmap at once over batch x so their activations stay within budget_bytes
        (100 simple_convnets on 1000 MNIST images would need ~30 GB at once)."""
        key = tuple(x.shape[1:])
        if key not in self._activation_bytes:
            self._activation_bytes[key] = max(1, self.activation_bytes(x))
        return max(1, budget_bytes // (self._activation_bytes[key] * len(x)))

    def run_autograd(self, params: Params, x, targets, lrs) -> Params:
        """Same as `run` with plain autograd (`create_graph=True`); one init at a time.

        Kept as a second implementation to check `run` against, and as the path of choice when
        vmap is slower for an architecture (see bench/)."""
        for t in range(lrs.shape[0]):
            loss = self._loss(params, x, targets)
            gs = torch.autograd.grad(loss, [params[k] for k in self.names], create_graph=True)
            params = {k: params[k] - lrs[t, i if lrs.shape[1] > 1 else 0] * g
                      for i, (k, g) in enumerate(zip(self.names, gs))}
        return params


def accuracy_and_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model correct counts and summed CE over a batch; logits [M, B, C]."""
    correct = (logits.argmax(-1) == y.unsqueeze(0)).sum(-1)
    loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[0]), reduction="none")
    return correct, loss.view(logits.shape[0], -1).sum(-1)


@torch.no_grad()
def evaluate_stack(loop: InnerLoop, stack: Params, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int = 1000, chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean CE of every model of a stack on (x, y): two tensors of shape [n_models].
    Models are vmapped `chunk_size` at a time (default: as many as fit in 2 GiB of activations), or run
    one at a time in channels-last format where that measured faster (InnerLoop.forward_models)."""
    correct = torch.zeros(stack_len(stack), dtype=torch.long, device=x.device)
    loss = torch.zeros(stack_len(stack), device=x.device)
    for i in range(0, len(y), batch_size):
        xb = x[i:i + batch_size]
        c, l = accuracy_and_loss(loop.forward_models(stack, xb, chunk_size), y[i:i + batch_size])
        correct += c
        loss += l
    return correct.float() / len(y), loss / len(y)


def label_distribution(labels: torch.Tensor, inner_loss: str) -> torch.Tensor:
    """What a soft label asks for: softmax of logits (soft_ce) or the raw vector (mse)."""
    return torch.softmax(labels, -1) if inner_loss == "soft_ce" else labels

