"""What a task learns from: dataset/ (a dataset's LightningDataModule and its split) and env/ (an RL
environment)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from .checks import _at_least, _at_most, _choice, _count, _seed
from .names import DATASETS, ENVS


@dataclass
class DatasetConfig:
    """One LightningDataModule for every dataset (distillscape.data.TensorDataModule)."""
    _target_: str = "distillscape.data.TensorDataModule"
    name: str = "digits"
    root: Optional[str] = "${paths.data_dir}"   # where the files are (torchvision's layout); digits needs none
    download: bool = False                      # let torchvision fetch missing files (needs internet)
    val_size: int = 200                         # training images held out for validation (fixed seed)
    batch_size: int = 256                       # real batch of an outer step / a direct-training step
    eval_batch_size: int = 1000
    train_subset: Optional[int] = None          # keep a fixed random subset of this many training images
    split_seed: int = 0                         # of the validation split and the train subset
    num_workers: int = 0

    def __post_init__(self):
        _choice("dataset.name", self.name, DATASETS)
        _count("dataset.val_size", self.val_size)
        _count("dataset.batch_size", self.batch_size)
        _count("dataset.eval_batch_size", self.eval_batch_size)
        _at_least("dataset.train_subset", self.train_subset, 1)
        _seed("dataset.split_seed", self.split_seed)
        _at_least("dataset.num_workers", self.num_workers, 0)
        _at_most("dataset.num_workers", self.num_workers, 256, "one worker per core is plenty")


# the identity of a dataset's data: two configs that agree on these read the same split, normalized the same
DATA_IDENTITY = ("name", "val_size", "split_seed", "train_subset")


@dataclass
class EnvConfig:
    """A reinforcement-learning task (gymnasium): the other kind of task beside dataset/. With env set,
    distillscape-distill distills the task into a batch of states and action targets."""
    name: str = "cartpole"
    game: Optional[str] = None         # Atari: the ale-py game (centipede)
    max_episode_steps: int = 500       # CartPole-v1's limit (an episode's return is at most this)
    frame_stack: int = 4               # Atari: frames per observation

    def __post_init__(self):
        _choice("env.name", self.name, ENVS)
        _at_least("env.max_episode_steps", self.max_episode_steps, 1)
        _at_most("env.max_episode_steps", self.max_episode_steps, 1_000_000, "longer is not an episode")
        _at_least("env.frame_stack", self.frame_stack, 1)
        if self.name != "cartpole" and not self.game:
            raise ConfigError(f"env.game must name the ale-py game of env={self.name}")
