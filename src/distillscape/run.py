"""A distillation run, opened: the one place every analysis gets its network, inner loop, init sampler,
points (init, landing, direct minimum) and data from.

A run directory of distillscape-distill holds distilled.safetensors + distilled.json (the batch, and
enough to rebuild the net it was made for), direct_minimum.safetensors + .json (the true-task minimum)
and snapshots/. `Run.open` reads it (or a single distilled file, e.g. a snapshot) and checks it once;
everything else is derived on demand. `RunPoints` names its points (minimum, landing, init, origin, or a
checkpoint file) as the flat vectors a landscape sweeps around.

Compatibility policy (the same for every analysis): the data an analysis measures on must be the data
the batch was distilled from. The caller's dataset settings must agree with the run's on the keys that
define the data (`config.DATA_IDENTITY`: name and split), or it is refused with the override that
fixes it; the data directory and batch sizes may differ. Once loaded, the data's normalization must
equal the one recorded in the run, or the files differ from the distillation's: refused too.
"""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import nn

from .artifacts import Distilled, load_distilled, read_checkpoint, read_tensors
from .config import DATA_IDENTITY, DatasetConfig, EnvConfig, EvalConfig, LandscapeConfig, as_settings
from .data import TensorDataModule, default_data_dir
from .direct import load_direct_minimum
from .geometry import swept_state
from .errors import ArtifactError, ConfigError
from .inner import InitSampler, InnerLoop
from .params import Params, as_stack_of_one, flatten, unstack
from .protocols import train_with_protocol
from .resume import recorded_job
from .seeds import seed_for
from .surface import SURFACE_FILE

DISTILLED_FILE = "distilled.safetensors"
DIRECT_FILE = "direct_minimum.safetensors"
# what other tasks leave in their output directories, to say what a wrong `distilled=` points at
OTHER_TASKS = {"landing_stats.json": "distillscape-landing", "instances.json": "distillscape-instances",
               "report.html": "distillscape-report", "study.json": "distillscape-study"}


def net_from_meta(meta: dict) -> nn.Module:
    """The network a distilled artifact (or direct minimum) was made for, rebuilt from its JSON."""
    if meta.get("kind") == "rl":  # a policy: observation shape and action count
        shape, actions = meta["image_shape"], meta["num_classes"]
        if len(shape) == 1:
            return instantiate(meta["arch"])(obs_dim=shape[0], num_actions=actions)
        c, h, w = shape
        return instantiate(meta["arch"])(obs_dim=c * h * w, num_actions=actions, in_channels=c, height=h, width_px=w)
    c, h, w = meta["image_shape"]
    return instantiate(meta["arch"])(in_channels=c, height=h, width=w, num_classes=meta["num_classes"])


def _not_a_run(path: Path) -> ArtifactError:
    found = [f"{name} ({task})" for name, task in OTHER_TASKS.items() if (path / name).exists()]
    if (path / "landing_parts").is_dir() or any(path.glob(f"*/{SURFACE_FILE}")):
        found.append("analysis outputs")
    task = job.task if (job := recorded_job(path)) else None  # the job whose records the directory holds
    if task == "distill" and (path / "checkpoints" / "last.ckpt").exists():
        what = ("it is a distill run that has not finished (it holds checkpoints/last.ckpt but no distilled batch "
                "yet): finish it first by rerunning its command with ckpt_path=last")
    elif found or (task and task != "distill"):
        what = (f"it is the output of distillscape-{task}" if task and task != "distill" else "it is the output of "
                "another task") + (f" (it holds {', '.join(found)})" if found else "")
    else:
        what = "it holds no distilled.safetensors"
    return ArtifactError(f"distilled={path} expects the output directory of distillscape-distill (or a "
                         f"distilled.safetensors file, e.g. one of its snapshots/); {what}. Give the distill "
                         f"run's directory, e.g. distilled=outputs/distill/<date>/<time>")


class Run:
    """A distilled batch and the run directory it lies in."""

    def __init__(self, path: Path, distilled: Distilled, source: Path):
        self.path, self.distilled, self.source = path, distilled, source
        self.meta = distilled.meta

    @classmethod
    def open(cls, path) -> "Run":
        """A distill run directory, or one distilled file of it (either of its two files, or a snapshot)."""
        source = Path(path)
        if source.is_dir() and not (source / DISTILLED_FILE).exists():
            raise _not_a_run(source)
        if not source.exists() and not source.with_suffix(".safetensors").exists():
            raise ArtifactError(f"distilled={source} does not exist: give the output directory of "
                                f"distillscape-distill (e.g. distilled=outputs/distill/<date>/<time>)")
        run_dir = source if source.is_dir() else source.parent
        if run_dir.name == "snapshots":  # a snapshot's run is the directory above
            run_dir = run_dir.parent
        return cls(run_dir, load_distilled(source), source)

    # -- what the batch was made for ---------------------------------------------------------------
    @property
    def is_rl(self) -> bool:
        """A batch of an RL task (env=...): states and action targets for a policy, not images."""
        return self.meta.get("kind") == "rl"

    def env(self) -> EnvConfig:
        """The environment an RL run was distilled on (its recorded env settings)."""
        if not self.is_rl:
            raise ConfigError(f"{self.path} was distilled from the dataset {self.dataset_name}, not an RL task: RL "
                              f"costs and analyses need a run of distillscape-distill experiment=cartpole (env=...)")
        return as_settings(EnvConfig, self.meta.get("config", {}).get("env") or {"name": self.meta["env"]})

    def critic(self, which: str) -> nn.Module:
        """An RL run's critic: "direct" (trained with the PPO minimum) or "distilled" (learned alongside
        the batch), with the run's critic architecture."""
        from .artifacts import read_tensors
        from .models import AtariActor, PolicyMLP
        shape = self.meta["image_shape"]
        hidden = self.meta.get("config", {}).get("rl", {}).get("critic_hidden", [64, 64])
        net = PolicyMLP(shape[0], 1, hidden) if len(shape) == 1 else AtariActor(
            0, 1, *shape, width=self.meta["arch"].get("width", 1.0))
        path = self.path / f"{which}_critic.safetensors"
        try:
            net.load_state_dict(read_tensors(path))
        except RuntimeError as e:
            raise ArtifactError(f"{path} does not fit the run's critic ({str(e).splitlines()[0]})") from None
        return net

    @property
    def dataset_name(self) -> str:
        return self.meta["dataset"]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def inner_loss(self) -> str:
        return self.meta["inner"]["loss"]

    @property
    def init_scheme(self) -> str:
        return self.meta["inner"].get("init_scheme", "default")

    @property
    def arch_name(self) -> str:
        return self.meta["arch"]["_target_"].rsplit(".", 1)[-1]

    def net(self, device=None) -> nn.Module:
        """A fresh network of the run's architecture (its own weights: callers may load into it)."""
        net = net_from_meta(self.meta)
        return net if device is None else net.to(device)

    def loop(self, device=None) -> InnerLoop:
        return InnerLoop(self.net(device), self.inner_loss)

    def sampler(self) -> InitSampler:
        return InitSampler(self.net(), self.init_scheme)

    def snapshot_files(self, wanted: str) -> list[Path]:
        """The snapshots of the distilled batch the run kept, in step order; ArtifactError (saying what
        `wanted` them) when it kept none."""
        files = sorted((self.path / "snapshots").glob("distilled_step*.safetensors"))
        if not files:
            raise ArtifactError(f"{wanted}, but there are no snapshots in {self.path / 'snapshots'}: rerun "
                                f"distillscape-distill with snapshot_every > 0")
        return files

    # -- points ------------------------------------------------------------------------------------
    def inits(self, n: int, seed: int, device=None) -> Params:
        """n held-out random inits (a stack), drawn as the distillation's sampler draws them."""
        return self.sampler().sample(n, seed=seed, device=device)

    def init(self, seed: int) -> Params:
        """The init of the point "init": the batch's fixed init if it has one, else the draw of `seed`."""
        if self.distilled.fixed_init is not None:
            return dict(self.distilled.fixed_init)
        return unstack(self.inits(1, seed), 0)

    def eval_protocol(self) -> EvalConfig:
        """How the batch trains a model (distill.eval, recorded in the run; one step for runs made before it)."""
        return as_settings(EvalConfig, self.meta.get("eval") or {})

    def land(self, inits: Params, loop: InnerLoop | None = None, chunk_size: int | None = None,
             protocol: EvalConfig | None = None) -> Params:
        """The landings (detached) of a stack of inits: the models that the run's evaluation protocol (or
        `protocol`) trains from them on the batch; under one_step, the batch's own inner steps."""
        loop = loop or self.loop()
        device = next(iter(inits.values())).device
        d = self.distilled
        seed = seed_for(self.meta.get("config", {}).get("distill", {}).get("eval_seed", 1_000_000), "eval",
                        "minibatch_order")
        return train_with_protocol(loop, inits, d.images.to(device), d.labels.to(device), d.lrs.to(device),
                                   protocol or self.eval_protocol(), seed=seed, chunk_size=chunk_size)

    def landing(self, seed: int) -> Params:
        """The landing of `init(seed)`."""
        return unstack(self.land(as_stack_of_one(self.init(seed))), 0)

    def direct_minimum_path(self, override=None, key: str = "direct_minimum") -> Path:
        """The run's direct minimum, or `override` (the value of the task's config key `key`)."""
        path = Path(override) if override else self.path / DIRECT_FILE
        if path.is_dir():
            path = path / DIRECT_FILE
        if not path.exists():
            raise ArtifactError(f"no direct minimum at {path}: rerun distillscape-distill (it writes one), or train "
                                f"one with distillscape-train and give it with {key}=<path>")
        return path

    def direct_minimum(self, override=None, device=None, key: str = "direct_minimum") -> nn.Module:
        """The run's architecture with the direct minimum's weights (or those of `override`)."""
        net, _ = load_direct_minimum(self.direct_minimum_path(override, key), self.net())
        return net if device is None else net.to(device)

    # -- data ----------------------------------------------------------------------------------------
    def recorded_dataset(self) -> dict:
        """The dataset settings the run was distilled with (a run of an older release may lack some)."""
        return dict(self.meta.get("config", {}).get("dataset") or {"name": self.dataset_name})

    def check_dataset(self, dataset) -> None:
        """Refuse dataset settings that would read other data than the run's (see the module's policy)."""
        ours = asdict(dataset) if is_dataclass(dataset) else dict(dataset)
        if ours.get("name") != self.dataset_name:
            raise ConfigError(f"{self.path} was distilled from {self.dataset_name}, the config loads "
                              f"{ours.get('name')}: add dataset={self.dataset_name}")
        theirs = self.recorded_dataset()
        for k in DATA_IDENTITY:
            if k in theirs and theirs[k] != ours.get(k):
                raise ConfigError(f"{self.path} was distilled with dataset.{k}={theirs[k]}, the config has "
                                  f"{ours.get(k)}: add dataset.{k}={'null' if theirs[k] is None else theirs[k]} "
                                  f"so train/val/test are the same splits")

    def datamodule(self, dataset=None, data_dir: str | None = None) -> TensorDataModule:
        """The run's data, set up. `dataset`: the caller's dataset settings (checked against the run's);
        None: the run's own settings, read from `data_dir` if given (else where the run found them)."""
        if self.is_rl:
            raise ConfigError(f"{self.path} is a run of the RL task {self.meta.get('env')}, it has no dataset: give "
                              f"it RL costs (sweep.costs=[episode_return,ppo_loss,distilled], experiment=rl_surfaces_2x2) "
                              f"or a dataset run's directory")
        if dataset is None:
            fields = {"root": default_data_dir(), **self.recorded_dataset(),
                      **({"root": str(data_dir)} if data_dir else {})}
            fields.pop("_target_", None)
            dataset = as_settings(DatasetConfig, fields)
        else:
            dataset = as_settings(DatasetConfig, dataset)
            self.check_dataset(dataset)
        dm = instantiate(asdict(dataset))
        dm.setup()
        self._check_data(dm)
        return dm

    def _check_data(self, dm: TensorDataModule) -> None:
        if list(dm.image_shape) != list(self.meta["image_shape"]) or dm.num_classes != self.num_classes:
            raise ArtifactError(f"the dataset {dm.name} has images {list(dm.image_shape)} and {dm.num_classes} "
                                f"classes, the distilled batch {self.meta['image_shape']} and {self.num_classes}: "
                                f"point distilled= at a batch of this dataset")
        norm, recorded = dm.normalization(), self.meta["normalization"]
        for k in ("mean", "std"):
            if not torch.allclose(torch.tensor(norm[k]), torch.tensor(recorded[k]), rtol=1e-4):
                raise ArtifactError(f"{self.path} was distilled with normalization {k}={recorded[k]}, the data "
                                    f"gives {norm[k]}: the dataset files differ from the distillation's")


NAMED_POINTS = ("minimum", "landing", "init", "origin")


class RunPoints:
    """The named points of a distillation run as flat vectors (built on first use, then kept).

    minimum: the run's direct minimum (or landscape.minimum); init: the init drawn with
    landscape.init_seed (the distilled batch's fixed init if it has one); landing: that init after the
    distilled batch's inner steps; any other name: a checkpoint file (.safetensors state dict, or a
    Lightning .ckpt of DirectModule)."""

    def __init__(self, run: Run, landscape: LandscapeConfig, buffers: str = "freeze"):
        self.run, self.landscape, self.buffers = run, landscape, buffers
        # the architecture's tensor names, shapes and layer kinds; every point has a net of its own
        self.net = run.net()
        self.swept, self.frozen = swept_state(self.net, buffers)
        self.names = list(self.swept)
        self._cache: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._cache:
            self._cache[name] = flatten(self._params(name), self.names).detach().clone()
        return self._cache[name]

    def available(self, name: str) -> bool:
        try:
            self[name]
            return True
        except ArtifactError:
            return False

    def _params(self, name: str) -> Params:
        if name == "init":
            return self.run.init(self.landscape.init_seed)
        if name == "origin":  # the origin of parameter space, the centre of the init distribution
            return {k: torch.zeros_like(v) for k, v in self.run.init(self.landscape.init_seed).items()}
        if name == "landing":
            return self.run.landing(self.landscape.init_seed)
        if name == "minimum":
            return self._swept(self.run.direct_minimum(self.landscape.minimum))
        return self._swept(self._checkpoint(Path(name)))

    def _swept(self, net: nn.Module) -> Params:
        return swept_state(net, self.buffers)[0]

    def _checkpoint(self, path: Path) -> nn.Module:
        if not path.exists():
            raise ConfigError(f"point {str(path)!r} is neither one of {', '.join(NAMED_POINTS)} nor an existing "
                              f"checkpoint file")
        if path.suffix == ".ckpt":
            state = read_checkpoint(path)["state_dict"]
            state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
        else:
            state = read_tensors(path)
        net = self.run.net()
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ArtifactError(f"{path} does not fit arch {type(net).__name__} ({str(e).splitlines()[0]}); "
                                f"give a checkpoint of the distilled run's arch") from None
        return net


def point_label(name: str) -> str:
    return name if name in NAMED_POINTS else Path(name).stem
