"""Configs compose for every dataset x arch and run; bad values fail early with a message naming
the key and the allowed values."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from distillscape.config import ConfigError, validate
from distillscape.distill import DistillModule
from distillscape.direct import DirectModule
from distillscape.job import Job
from distillscape.models import build_net
from distillscape.tasks.common import build_datamodule, build_logger
from conftest import REPO, SHARED_DATA, compose_cfg, needs_mnist

DATASETS = ["digits", "mnist", "fashion_mnist", "cifar10"]
ARCHS = ["mlp", "lenet", "simple_convnet", "convnet"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_and_arch_runs_fast_dev_run(tmp_path, tiny_data_root, dataset, arch):
    if dataset == "mnist" and not (SHARED_DATA / "MNIST").exists():
        pytest.skip(f"full MNIST not under {SHARED_DATA}")
    root = SHARED_DATA if dataset == "mnist" else tiny_data_root
    cfg = compose_cfg("distill", [f"dataset={dataset}", f"arch={arch}", f"paths.data_dir={root}",
                                  "dataset.batch_size=16", "dataset.eval_batch_size=64", "dataset.val_size=50",
                                  "distill.inits_per_step=2", "distill.val_inits=2", "distill.eval_inits=2",
                                  "distill.batching=vmap", "logger=none", "+trainer.fast_dev_run=true"], tmp_path)
    validate(cfg)
    dm = instantiate(cfg.dataset)
    dm.setup()
    module = DistillModule(build_net(Job.of(cfg).settings.arch, dm.image_shape, dm.num_classes), dm.num_classes, dm.image_shape, OmegaConf.to_container(cfg.distill))
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    before = module.images.detach().clone()
    trainer.fit(module, dm)
    assert not torch.equal(before, module.images.detach()), "one outer step must move the synthetic images"
    (metrics,) = trainer.test(module, dm, verbose=False)
    assert 0.0 <= metrics["test/onestep_acc_mean"] <= 1.0 and metrics["test/onestep_inits"] == 2


@pytest.mark.parametrize("override,needle", [
    ("distill.images_per_class=-1", "distill.images_per_class=-1 must be >= 1"),
    ("distill.label_mode=fuzzy", "choose one of: soft, onehot"),
    ("distill.inner_loss=l1", "choose one of: mse, soft_ce"),
    ("distill.init_scheme=uniform", "choose one of: default, kaiming, xavier, orthogonal"),
    ("dataset.name=svhn", "choose one of: digits, mnist, fashion_mnist, cifar10"),
    ("distill.lr_init=0", "distill.lr_init=0.0 must be > 0"),
    ("distill.steps=many", "distill.steps"),
])
def test_bad_values_name_key_and_allowed_values(tmp_path, override, needle):
    # a value of the wrong type is refused while composing (the schema types it), a bad value by validate
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        validate(compose_cfg("distill", [override], tmp_path))


def test_mistyped_key_in_a_config_file_is_caught(tmp_path):
    cfg = compose_cfg("distill", ["+distill.imags_per_class=3"], tmp_path)  # '+' gets it past Hydra's struct check
    with pytest.raises(ConfigError, match=r"unknown key distill\.imags_per_class\. Did you mean distill\.images_per_class"):
        validate(cfg)


def run_cli(*args, env_extra=None):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "distillscape.tasks.distill", *args], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("args,needles", [
    (["distill.images_per_class=-2"], ["distill.images_per_class=-2 must be >= 1"]),
    (["distill.imags_per_class=3"], ["distill.imags_per_class"]),   # Hydra's struct check names the key
    (["dataset=svhn"], ["dataset", "digits", "mnist", "fashion_mnist", "cifar10"]),  # lists the options
    (["dataset=mnist", "paths.data_dir=/nonexistent/data"], ["/nonexistent/data/MNIST/raw", "DISTILLSCAPE_DATA"]),
])
def test_cli_fails_early_with_one_clear_message(tmp_path, args, needles):
    r = run_cli(*args, f"hydra.run.dir={tmp_path}")
    assert r.returncode != 0
    for needle in needles:
        assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "distilled.safetensors").exists()


@pytest.mark.parametrize("logger,expected", [("csv", "csv/metrics.csv"), ("tensorboard", "tensorboard"), ("none", None)])
def test_logger_options_write_their_files(tmp_path, logger, expected):
    cfg = compose_cfg("train", [f"logger={logger}", "arch=mlp", "direct.epochs=1"], tmp_path)
    dm = build_datamodule(Job.of(cfg).settings.dataset)
    lg = build_logger(Job.of(cfg))
    trainer = instantiate(cfg.trainer, logger=lg, max_epochs=1, enable_checkpointing=False)
    trainer.fit(DirectModule(build_net(Job.of(cfg).settings.arch, dm.image_shape, dm.num_classes)), dm)
    if expected is None:
        assert lg is False
        return
    path = tmp_path / expected
    assert path.exists(), sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    if logger == "csv":
        assert "val/acc" in path.read_text().splitlines()[0]
    else:
        assert any(p.name.startswith("events.out.tfevents") for p in path.rglob("*"))


# every experiment config, composed with the task it is for (a new experiment must be listed here)
EXPERIMENT_TASKS = {"mnist_onestep": "distill", "sweep_distill": "distill", "surfaces_2x2": "landscape",
                    "plane_minima": "landscape", "surface_evolution": "landscape", "surface_subsets": "landscape",
                    "sweep_landscape_shards": "landscape", "landing_stats": "landing", "early_training": "landing",
                    "study_digits": "study",
                    "study_mnist": "study", "cartpole": "distill",
                    "centipede": "distill", "rl_surfaces_2x2": "landscape", "rl_return_surfaces": "landscape",
                    "rl_init_space": "landscape", "study_cartpole": "study", "atlas": "study"}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENT_TASKS))
def test_every_experiment_composes_and_validates(experiment, tmp_path):
    """Composes and validates each experiment; for a study, every stage's config as the study composes it
    (so a mistyped override in a study's stage list fails here, not an hour into the study)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from distillscape.tasks.common import CONF_DIR
    from distillscape.tasks.study import compose_stage, stage_order, stage_overrides, stage_task

    assert set(EXPERIMENT_TASKS) == {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    task = EXPERIMENT_TASKS[experiment]
    extra = ["distilled=x"] if task in ("landscape", "landing") else []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=task, overrides=[f"experiment={experiment}", f"paths.output_dir={tmp_path}", *extra],
                      return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in the experiment (e.g. a sweep dir)
        with open_dict(cfg):
            del cfg["hydra"]
        validate(cfg)
        if task != "study":
            return
        job = Job.of(cfg)
        stages = stage_order(job)
        assert stage_task(job, stages[0]) == "distill" and stage_task(job, stages[-1]) == "report"
        for stage in stages:
            stage_cfg = compose_stage(stage_task(job, stage), stage_overrides(job, stage, tmp_path, stages))
            validate(stage_cfg)
            if "dataset" in stage_cfg:
                assert stage_cfg.dataset.name == cfg.study.dataset
