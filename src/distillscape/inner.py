"""The inner loop: gradient descent on a synthetic batch, written functionally so it can be
differentiated (into images, labels and learning rates) and batched over many initializations.

Parameters travel as `params.Params` (dicts name -> tensor); a *stack* carries a leading init
dimension, and `torch.func.vmap` maps one inner run over it.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from . import config
from .config import INNER_LOSSES
from .models import channels_last_params, features_channels_last, fused_conv_relu, init_parameters_
from .params import Params, stack_len, unstack

EVAL_PATHS = tuple(p for p in config.EVAL_PATHS if p != "auto")  # how evaluation runs many models: see InnerLoop.forward_models
# examples per forward of the channels-last path (one model at a time), by precision: 128 in fp32, a forward
# whose activations stay in a CPU's cache. A bfloat16 forward holds half the bytes per image and, with each
# conv's ReLU fused into it (models.fused_conv_relu), does its work ~4x as fast (simple_convnet on MNIST, 4096
# images, one thread's CPU time: 108 ms against 417 ms in fp32 at 128 images); 4x the images keep a forward's
# fixed costs (each op's thread fork and join, the classifier weight's permutation) at the fp32 path's share of
# its time. (One thread's CPU time was the same within 10% at 128, 256 and 512 images, 1.8x at 1024.)
CHANNELS_LAST_EXAMPLES = {"fp32": 128, "bf16": 512}
# the dtype each of config.PRECISIONS's forwards run in; their losses are taken in float32 and summed in float32 or wider
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def has_conv_weights(net: nn.Module) -> bool:
    """Whether the net has 4-D (conv) weights: what the path rules below turn on."""
    return any(p.dim() == 4 for p in net.parameters())


def outer_batching_rule(net: nn.Module, device_type: str) -> str:
    """The outer step's path for `distill.batching=auto`: a pure function of the architecture and the kind
    of device, never of a timing, so that the same command gives the same bits on an idle and on a busy
    machine (the two paths round differently, and the outer loop carries the difference on).
    vmap for every net and device: on 2 CPU cores (bench/bench_paths.py, 8 inits, real batch 256) it ran
    the outer step 1.3-7x faster than the loop for lenet, simple_convnet and convnet on digits, 2.7-4x for
    the mlp, lenet and simple_convnet on MNIST; the loop won only for the mlp on 8x8 digits, a step of under
    a second. The loop stays as the path that holds one init's activations at a time (`memory_estimate`),
    to be pinned."""
    return "vmap"


# a model's layer outputs per example from which, on a CPU, evaluation runs channels-last (see eval_path_rule)
CHANNELS_LAST_MIN_BYTES = 256 << 10
# the activations of the models vmapped at once in an evaluation: on a GPU, what fits in memory; on a CPU, what
# stays in cache. Beyond that a CPU's elementwise steps (bias, ReLU) stream every layer output through memory: 1000
# mlps on the 359 digits test images took 1.08 s in one vmap of all of them, 0.43 s 17 at a time (8 MiB; 2, 4, 16,
# 32 MiB: 0.49, 0.46, 0.51, 0.59 s; bench/bench_eval_inits.py end to end), on MNIST 6.3-6.9 s whatever the chunk
EVAL_BUDGET_BYTES = {"cpu": 8 << 20}
EVAL_BUDGET_DEFAULT = 2 << 30


def eval_path_rule(net: nn.Module, example_bytes: int, device_type: str) -> str:
    """How `InnerLoop.forward_models` runs many models when its eval_path is auto, by the same kind of rule
    (of the net, the bytes of its layer outputs per example and the device kind): on a CPU, a net with conv
    weights whose outputs per example reach CHANNELS_LAST_MIN_BYTES one model at a time with channels-last
    weights (oneDNN's NHWC kernels on cache-sized pieces of the data), every other net, and every net on a
    GPU, vmapped. Measured on 2 CPU cores (bench/bench_paths.py, 8 models on 1000 examples): channels-last
    3x faster for simple_convnet on MNIST (294 KiB per example), vmap 1.5-11x faster for lenet on MNIST
    (59 KiB) and for every conv net on 8x8 digits (up to 137 KiB), and for the mlp everywhere."""
    if device_type == "cpu" and has_conv_weights(net) and example_bytes >= CHANNELS_LAST_MIN_BYTES:
        return "channels_last"
    return "vmap"


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
        self._activation_bytes: dict[tuple, int] = {}  # per example shape, for eval_chunk and eval_path_for
        if eval_path not in ("auto", *EVAL_PATHS):
            raise ValueError(f"eval_path={eval_path!r}; allowed: auto, {', '.join(EVAL_PATHS)}")
        self.eval_path = eval_path

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

    def forward_models(self, stack: Params, x: torch.Tensor, chunk_size: int | None = None,
                       precision: str = "fp32") -> torch.Tensor:
        """Logits [n_models, batch, classes] for evaluation (no autograd): vmapped over the models, or
        one model at a time with channels-last weights on cache-sized pieces of x; `eval_path`, or with
        auto the path `eval_path_rule` gives for the net and x's device (the same path in every precision).
        precision bf16: weights, buffers and inputs cast to bfloat16 for the forward, logits back in float32."""
        path, chunk = self.eval_path_for(x), chunk_size or self.eval_chunk(x)  # measured on x as it is (fp32)
        if precision == "fp32":
            return self._forward_path(path, stack, x, chunk)
        dtype = PRECISION_DTYPES[precision]
        kept = self.buffers
        self.buffers = {k: v.to(dtype) if v.is_floating_point() else v for k, v in kept.items()}
        try:
            return self._forward_path(path, {k: v.to(dtype) for k, v in stack.items()}, x.to(dtype), chunk).float()
        finally:
            self.buffers = kept

    def _forward_path(self, path: str, stack: Params, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
        if path == "vmap":
            return self.forward_stack(stack, x, chunk_size)
        return self._forward_channels_last(stack, x)

    def eval_path_for(self, x: torch.Tensor) -> str:
        """The path forward_models takes on inputs like x (their shape and device): eval_path, or its rule where
        it is auto."""
        if self.eval_path != "auto":
            return self.eval_path
        return eval_path_rule(self.net, self.example_bytes(x), x.device.type)

    def _forward_channels_last(self, stack: Params, x: torch.Tensor) -> torch.Tensor:
        piece = CHANNELS_LAST_EXAMPLES["bf16" if x.dtype == torch.bfloat16 else "fp32"]
        # bf16 on a CPU: each conv's ReLU fused into it (models.fused_conv_relu)
        with features_channels_last(self.net), fused_conv_relu(self.net, x.dtype == torch.bfloat16 and x.device.type == "cpu"):
            return torch.stack([torch.cat([self.forward(channels_last_params(unstack(stack, i)), x[j:j + piece])
                                           for j in range(0, len(x), piece)]) for i in range(stack_len(stack))])

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

    def example_bytes(self, x: torch.Tensor) -> int:
        """`activation_bytes` of one example like x[0], measured once per example shape."""
        key = tuple(x.shape[1:])
        if key not in self._activation_bytes:
            self._activation_bytes[key] = max(1, self.activation_bytes(x))
        return self._activation_bytes[key]

    def eval_chunk(self, x: torch.Tensor, budget_bytes: int | None = None) -> int:
        """How many models to vmap at once over batch x so their activations stay within budget_bytes
        (100 simple_convnets on 1000 MNIST images would need ~30 GB at once); default: EVAL_BUDGET_BYTES of
        x's device kind."""
        budget = budget_bytes or EVAL_BUDGET_BYTES.get(x.device.type, EVAL_BUDGET_DEFAULT)
        return max(1, budget // (self.example_bytes(x) * len(x)))

    def run_autograd(self, params: Params, x, targets, lrs) -> Params:
        """Same as `run` with plain autograd (`create_graph=True`); one init at a time.

        Kept as a second implementation to check `run` against, and as the outer step's path where
        vmap is slower (`outer_batching_rule`)."""
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
                   batch_size: int = 1000, chunk_size: int | None = None,
                   precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean CE of every model of a stack on (x, y): two tensors of shape [n_models].
    Models are vmapped `chunk_size` at a time (default: as many as fit in 2 GiB of activations), or run
    one at a time in channels-last format (InnerLoop.forward_models: eval_path, or its rule); in bf16
    their forwards run in bfloat16 and the losses are taken and summed in float32."""
    correct = torch.zeros(stack_len(stack), dtype=torch.long, device=x.device)
    loss = torch.zeros(stack_len(stack), device=x.device)
    for i in range(0, len(y), batch_size):
        xb = x[i:i + batch_size]
        c, l = accuracy_and_loss(loop.forward_models(stack, xb, chunk_size, precision), y[i:i + batch_size])
        correct += c
        loss += l
    return correct.float() / len(y), loss / len(y)


def label_distribution(labels: torch.Tensor, inner_loss: str) -> torch.Tensor:
    """What a soft label asks for: softmax of logits (soft_ce) or the raw vector (mse)."""
    return torch.softmax(labels, -1) if inner_loss == "soft_ce" else labels

