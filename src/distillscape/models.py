"""Architectures and the initialization schemes we sample from.

Every network takes `(in_channels, height, width, num_classes)` so one `arch/` config works on every
dataset. None of them keeps running statistics: distillation trains from many fresh inits through
`torch.func.functional_call`, where batch-norm buffers would leak state between inits (the 3-block
ConvNet uses instance norm for exactly that reason, as the distillation literature does).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .config import INIT_SCHEMES


def channels_last_params(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """4-D (conv) weights in channels-last memory format, the rest as they are. A conv with
    channels-last weights computes, and outputs, in that format (oneDNN's faster NHWC kernels on CPU).
    empty_like rather than .contiguous(): a 1-channel weight counts as contiguous in both formats and
    would keep strides that make its conv, and the next one's input, NCHW."""
    return {k: torch.empty_like(v, memory_format=torch.channels_last).copy_(v) if v.dim() == 4 else v
            for k, v in params.items()}


@contextmanager
def features_channels_last(net: nn.Module):
    """Within the block, a net with a `channels_last` switch flattens its conv features in (H, W, C) order."""
    before = getattr(net, "channels_last", None)
    if before is not None:
        net.channels_last = True
    try:
        yield net
    finally:
        if before is not None:
            net.channels_last = before


def _conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """relu(conv(x)) in one oneDNN primitive: the ReLU as the convolution's post-op, applied to its output
    before it is written (the same values as the two steps: max(0, v) of the same v)."""
    return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                                                   list(conv.dilation), conv.groups, "relu", [], "")


@contextmanager
def fused_conv_relu(net: nn.Module, on: bool = True):
    """Within the block (when `on`), every Conv2d followed by a ReLU in an nn.Sequential of `net` runs as one
    oneDNN convolution with the ReLU fused (`_conv_relu`), the ReLU module skipped; parameter names stay as
    they are, so functional_call feeds the same weights. For bfloat16 forwards on a CPU: there a separate
    in-place ReLU over the conv output cost as much as the convolution itself (bf16 elementwise kernels
    convert each element to float32 and back; simple_convnet on MNIST, 128 images: conv 1.2 ms, + ReLU
    2.3 ms, fused 1.35 ms, bit-identical). Only zero-padded convs with numeric padding, and only where
    oneDNN is available (the op is CPU-only); elsewhere a no-op."""
    swapped = []
    if on and torch.backends.mkldnn.is_available():
        for seq in net.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            for i in range(len(seq) - 1):
                conv, relu = seq[i], seq[i + 1]
                if (type(conv) is nn.Conv2d and isinstance(relu, nn.ReLU) and conv.padding_mode == "zeros"
                        and not isinstance(conv.padding, str)):
                    swapped.append((seq, i, relu))
    try:
        for seq, i, _ in swapped:
            seq[i].forward = lambda x, conv=seq[i]: _conv_relu(conv, x)
            seq[i + 1] = nn.Identity()
        yield net
    finally:
        for seq, i, relu in swapped:
            del seq[i].forward
            seq[i + 1] = relu


def classify_features(features: torch.Tensor, linear: nn.Linear, channels_last: bool) -> torch.Tensor:
    """`linear(features.flatten(1))`. With channels_last the features are flattened in (H, W, C) order
    and the weight's columns permuted to match: the same function, but the flatten of channels-last
    activations is a view instead of a copy (a sixth of a CPU landscape sweep's time went to that copy)."""
    if not channels_last or features.dim() != 4:
        return linear(features.flatten(1))
    weight = linear.weight.unflatten(1, features.shape[1:]).permute(0, 2, 3, 1).flatten(1)
    return F.linear(features.permute(0, 2, 3, 1).flatten(1), weight, linear.bias)


class MLP(nn.Module):
    def __init__(self, in_channels: int, height: int, width: int, num_classes: int,
                 hidden: tuple[int, ...] | list[int] = (128,)):
        super().__init__()
        sizes = [in_channels * height * width, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class LeNet(nn.Module):
    """LeNet-5 (ReLU, max pooling), the network of Wang et al. 2018's MNIST experiments."""

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int):
        super().__init__()
        # the second conv is padded only on small inputs (8x8 digits), which it would otherwise consume
        pad = 2 if min(height, width) < 16 else 0
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        )
        with torch.no_grad():
            n = self.features(torch.zeros(1, in_channels, height, width)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(n, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class SimpleConvNet(nn.Module):
    """conv 3x3 16 -> ReLU -> conv 3x3 32 -> ReLU -> linear: the reference cost-surface study's network."""

    channels_last = False  # flatten the conv features in (H, W, C) order: see classify_features

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        )
        self.lin = nn.Linear(32 * height * width, num_classes)

    def forward(self, x):
        return classify_features(self.convs(x), self.lin, self.channels_last)


class ConvNet(nn.Module):
    """The ConvNet of distillation benchmarks: `depth` blocks of conv 3x3 -> instance norm -> ReLU -> avg pool."""

    channels_last = False  # see classify_features

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int,
                 width_channels: int = 128, depth: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        c, h, w = in_channels, height, width
        for _ in range(depth):
            blocks += [nn.Conv2d(c, width_channels, 3, padding=1),
                       nn.GroupNorm(width_channels, width_channels, affine=True),  # = instance norm, with affine
                       nn.ReLU()]
            c = width_channels
            if h >= 2 and w >= 2:  # 8x8 digits run out of pixels before three pools
                blocks.append(nn.AvgPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def forward(self, x):
        return classify_features(self.features(x), self.classifier, self.channels_last)


def init_parameters_(net: nn.Module, scheme: str = "default") -> nn.Module:
    """Re-draw every parameter of `net` in place from the given scheme, using torch's global RNG."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; allowed: {', '.join(INIT_SCHEMES)}")
    if scheme == "orthogonal":  # the RL policies' init (the reference study's cart-pole actor): orthogonal
        # weights, gain sqrt(2) (ReLU/tanh layers), the output layer's gain 0.01 so an init's own actions are
        # near uniform; zero biases
        layers = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        for m in layers:
            nn.init.orthogonal_(m.weight, gain=0.01 if m is layers[-1] else math.sqrt(2))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        for m in net.modules():
            if not isinstance(m, (nn.Linear, nn.Conv2d)) and hasattr(m, "reset_parameters") and m is not net:
                m.reset_parameters()
        return net
    for m in net.modules():
        if scheme == "default" or not isinstance(m, (nn.Linear, nn.Conv2d)):
            if hasattr(m, "reset_parameters") and m is not net:
                m.reset_parameters()
            continue
        if scheme == "kaiming":
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        else:
            nn.init.xavier_normal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return net


def flops_per_example(net: nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds x2 of one forward pass of Linear and Conv2d layers (for GFLOP/s reports)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Linear):
            total += 2 * m.in_features * m.out_features
        elif isinstance(m, nn.Conv2d):
            k = math.prod(m.kernel_size) * m.in_channels // m.groups
            total += 2 * k * out[0].numel()

    _forward_one(net, example, hook, [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))])
    return total


def _forward_one(net: nn.Module, example: torch.Tensor, hook, modules: list[nn.Module]) -> None:
    """One example through net without autograd, with `hook` on `modules` for that pass only."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            net(example[:1])
    finally:
        for h in handles:
            h.remove()


def activations_per_example(net: nn.Module, example: torch.Tensor) -> int:
    """Floats one example leaves behind in a forward pass: the input and every leaf module's output (what
    autograd keeps for the backward pass, give or take), for memory estimates."""
    total = example[:1].numel()

    def hook(m, inp, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out[0].numel()

    _forward_one(net, example, hook, [m for m in net.modules() if not list(m.children())])
    return total


# -- policies (reinforcement-learning tasks) ------------------------------------------------------------------
_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class PolicyMLP(nn.Module):
    """A policy (or value) network on flat observations: Linear -> activation per hidden layer -> Linear
    to `num_actions` outputs (action logits; 1 output: a state value). Tanh and 64 x 64 by default, the
    cart-pole actor and critic of the reference study."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: tuple[int, ...] | list[int] = (64, 64),
                 activation: str = "tanh"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(_ACTIVATIONS)}")
        sizes = [obs_dim, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), _ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], num_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)

    def forward_stack(self, stack: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Outputs [M, B, A] of a stack of M of these networks (parameters with a leading model dim),
        network m on x[m] ([M, B, obs_dim]): one batched matmul per layer, the same function as vmapping
        `forward` (tests/test_rl.py) at a fraction of its per-call overhead, which dominates a rollout."""
        h = x.flatten(2)
        for i, layer in enumerate(self.net):
            if isinstance(layer, nn.Linear):
                w, b = stack[f"net.{i}.weight"], stack[f"net.{i}.bias"]
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            elif not isinstance(layer, nn.Flatten):
                h = layer(h)
        return h


class AtariActor(nn.Module):
    """A conv policy on stacked Atari frames [C, H, W] (scaled to [0, 1]): the Nature-DQN torso (conv 8x8/4
    32, conv 4x4/2 64, conv 3x3/1 64, linear 512) with `width` scaling its channels, then action logits."""

    def __init__(self, obs_dim: int, num_actions: int, in_channels: int = 4, height: int = 84, width_px: int = 84,
                 width: float = 1.0):
        super().__init__()
        c1, c2, c3, hid = (max(1, int(round(v * width))) for v in (32, 64, 64, 512))
        self.convs = nn.Sequential(nn.Conv2d(in_channels, c1, 8, stride=4), nn.ReLU(),
                                   nn.Conv2d(c1, c2, 4, stride=2), nn.ReLU(),
                                   nn.Conv2d(c2, c3, 3, stride=1), nn.ReLU())
        with torch.no_grad():
            n = self.convs(torch.zeros(1, in_channels, height, width_px)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n, hid), nn.ReLU(), nn.Linear(hid, num_actions))
        self.shape = (in_channels, height, width_px)

    def forward(self, x):
        return self.head(self.convs(x.view(-1, *self.shape)))
