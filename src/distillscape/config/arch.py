"""arch/: one schema per network. Built with the dataset's shape and class count:
`instantiate(arch)(in_channels=, height=, width=, num_classes=)`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from ..errors import ConfigError
from .checks import _at_least, _at_most, _choice


# Built with the dataset's shape and class count: `instantiate(arch)(in_channels=, height=, width=, num_classes=)`.
@dataclass
class MLPConfig:
    """Fully connected network, ReLU hidden layers."""
    _target_: str = "distillscape.models.MLP"
    _partial_: bool = True
    hidden: List[int] = field(default_factory=lambda: [128])

    def __post_init__(self):
        if any(int(h) < 1 for h in self.hidden):
            raise ConfigError(f"arch.hidden={list(self.hidden)} must be positive layer widths")


@dataclass
class LeNetConfig:
    """LeNet-5 with ReLU and max pooling (Wang et al. 2018's MNIST network)."""
    _target_: str = "distillscape.models.LeNet"
    _partial_: bool = True


@dataclass
class SimpleConvNetConfig:
    """conv 3x3 16 -> ReLU -> conv 3x3 32 -> ReLU -> linear: the reference cost-surface study's network."""
    _target_: str = "distillscape.models.SimpleConvNet"
    _partial_: bool = True


@dataclass
class ConvNetConfig:
    """The 3-block ConvNet of distillation benchmarks: conv 3x3 -> instance norm -> ReLU -> avg pool."""
    _target_: str = "distillscape.models.ConvNet"
    _partial_: bool = True
    width_channels: int = 128
    depth: int = 3

    def __post_init__(self):
        _at_least("arch.width_channels", self.width_channels, 1)
        _at_most("arch.width_channels", self.width_channels, 4096, "wider would exhaust memory")
        _at_least("arch.depth", self.depth, 1)
        _at_most("arch.depth", self.depth, 16, "deeper is not this network")


@dataclass
class PolicyMLPConfig:
    """A policy network on flat observations (RL tasks): hidden layers with tanh (or relu), then action
    logits. Built with the environment's sizes: `instantiate(arch)(obs_dim=, num_actions=)`."""
    _target_: str = "distillscape.models.PolicyMLP"
    _partial_: bool = True
    hidden: List[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"

    def __post_init__(self):
        if any(int(h) < 1 for h in self.hidden):
            raise ConfigError(f"arch.hidden={list(self.hidden)} must be positive layer widths")
        _choice("arch.activation", self.activation, ("tanh", "relu"))


@dataclass
class AtariActorConfig:
    """The conv policy on stacked Atari frames (Nature-DQN torso; `width` scales its channels)."""
    _target_: str = "distillscape.models.AtariActor"
    _partial_: bool = True
    width: float = 1.0

    def __post_init__(self):
        _at_least("arch.width", self.width, 0.0, strict=True)
        _at_most("arch.width", self.width, 16.0, "wider would exhaust memory")


ARCH_SCHEMAS = {"mlp": MLPConfig, "lenet": LeNetConfig, "simple_convnet": SimpleConvNetConfig,
                "convnet": ConvNetConfig, "policy_mlp": PolicyMLPConfig, "atari_actor": AtariActorConfig}


POLICY_ARCHS = ("distillscape.models.PolicyMLP", "distillscape.models.AtariActor")


IMAGE_ARCHS = ("mlp", "lenet", "simple_convnet", "convnet")  # the architectures of image classification


ARCHS = tuple(s._target_ for s in ARCH_SCHEMAS.values())
