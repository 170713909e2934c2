"""Distillation end to end on the embedded digits set, and its artifact."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from distillscape.artifacts import ArtifactError, load_distilled, save_distilled
from distillscape.data import TensorDataModule
from distillscape.distill import DistillModule
from distillscape.inner import evaluate_stack
from distillscape.models import MLP
from distillscape.job import Job
from distillscape.tasks.common import build_trainer
from distillscape.tasks.distill import at_chance_warning
from conftest import compose_cfg


def onestep_test_accuracy(module: DistillModule, dm, n_inits=20) -> float:
    inits = module.sampler.sample(n_inits, seed=4242)
    landed = {k: v.detach() for k, v in module.land(inits).items()}
    acc, _ = evaluate_stack(module.loop, landed, dm.test_x, dm.test_y)
    return acc.mean().item()


def test_short_distillation_lifts_one_step_accuracy_far_above_chance(tmp_path):
    cfg = compose_cfg("distill", ["arch=mlp", "distill.steps=300", "distill.val_every=300", "distill.val_inits=5",
                                  "logger=none", "distill.batching=vmap"], tmp_path)
    torch.manual_seed(0)
    dm = TensorDataModule("digits")
    dm.setup()
    module = DistillModule(MLP(1, 8, 8, 10, hidden=[128]), 10, (1, 8, 8), OmegaConf.to_container(cfg.distill))
    before = onestep_test_accuracy(module, dm)
    build_trainer(Job.of(cfg), logger=False, enable_checkpointing=False).fit(module, dm)
    after = onestep_test_accuracy(module, dm)
    assert before < 0.25, before        # noise images: one step is at chance (10 classes)
    assert after > 0.6, after           # 300 outer steps: far above it
    assert not torch.allclose(module.lrs, torch.full_like(module.lrs, cfg.distill.lr_init))  # the rates are learned too
    # the job's at-chance check stays quiet; the first outer loss it reads is the real one
    assert 1.5 < module.first_outer_loss < 4.0  # noise batch, one small step: about ln 10
    assert at_chance_warning(after, 10, module.first_outer_loss) is None


def test_at_chance_warning_names_the_likely_cause():
    """An overshooting first step (outer loss far above ln C, as kaiming inits gave on MNIST) points
    at distill.lr_init; a run that just did not learn enough points at the length and outer rates."""
    overshoot = at_chance_warning(0.102, 10, 13.6)
    assert "0.102 is at chance" in overshoot and "smaller distill.lr_init" in overshoot and "13.6" in overshoot
    assert "init_scheme=default" in at_chance_warning(0.102, 10, 2.97)  # kaiming's first loss at lr_init 2e-4
    slow = at_chance_warning(0.15, 10, 2.31)
    assert "Raise distill.steps" in slow
    assert at_chance_warning(0.15, 10, None).startswith("one-step test accuracy 0.150")
    assert at_chance_warning(0.2, 10, 13.6) is None and at_chance_warning(0.56, 2, 9.0) is None
    assert "1/2 = 0.500" in at_chance_warning(0.54, 2, None)


def test_main_job_writes_artifact_with_honest_metrics(digits_run):
    d = load_distilled(digits_run)
    assert d.images.shape == (10, 1, 8, 8) and d.labels.shape == (10, 10)
    assert d.lrs.shape == (1, len(d.meta["inner"]["param_names"]))  # lr_per_param: one rate per tensor
    assert (d.lrs > 0).all()
    m = d.metrics
    for key in ("test/onestep_acc_mean", "test/onestep_acc_std", "direct/acc", "random_real/acc_mean"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["test/onestep_inits"] == 8 and m["random_real/inits"] == 8
    assert d.meta["dataset"] == "digits" and d.meta["arch"]["_target_"] == "distillscape.models.MLP"
    assert json.loads((digits_run / "metrics.json").read_text()) == m
    assert (digits_run / "distilled.png").stat().st_size > 1000
    assert (digits_run / "direct_minimum.safetensors").exists()
    snaps = sorted(p.name for p in (digits_run / "snapshots").glob("*.safetensors"))
    assert snaps == ["distilled_step000000.safetensors", "distilled_step000030.safetensors",
                     "distilled_step000060.safetensors"]
    # the direct baseline really trained: far better than one step on random real images
    assert m["direct/acc"] > 0.8
    # a CPU run records the process's peak memory (a real reading: at least the loaded torch) and no GPU figure
    assert m["train/peak_rss_mib"] > 100 and "train/peak_gpu_mib" not in m


def test_artifact_round_trips_bit_exactly(tmp_path, digits_run):
    d = load_distilled(digits_run / "distilled.safetensors")
    save_distilled(tmp_path, d)
    e = load_distilled(tmp_path)
    for a, b in ((d.images, e.images), (d.labels, e.labels), (d.lrs, e.lrs)):
        assert torch.equal(a, b) and a.dtype == b.dtype
    assert e.meta == d.meta


def test_artifacts_get_the_usual_file_permissions(tmp_path):
    """Atomic writes go through a mkstemp file (owner-only); the artifact must not stay that way."""
    import os
    import stat
    from distillscape.artifacts import write_json
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_corrupt_or_incomplete_artifact_gives_clear_error(tmp_path, digits_run):
    d = load_distilled(digits_run)
    save_distilled(tmp_path, d)
    st = tmp_path / "distilled.safetensors"
    st.write_bytes(st.read_bytes()[:100])  # truncated
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        load_distilled(tmp_path)
    save_distilled(tmp_path, d)
    (tmp_path / "distilled.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_distilled(tmp_path)
    (tmp_path / "distilled.json").unlink()
    with pytest.raises(ArtifactError, match="does not exist"):
        load_distilled(tmp_path)


def test_fixed_init_mode_trains_one_saved_init(tmp_path):
    cfg = compose_cfg("distill", ["arch=mlp", "distill.init_mode=fixed", "distill.steps=40", "distill.val_every=40",
                                  "distill.val_inits=3", "distill.eval_inits=3", "logger=none"], tmp_path)
    dm = TensorDataModule("digits")
    dm.setup()
    module = DistillModule(MLP(1, 8, 8, 10, hidden=[128]), 10, (1, 8, 8), OmegaConf.to_container(cfg.distill))
    first = module.training_inits()
    assert all(torch.equal(first[k], module.training_inits()[k]) for k in first)  # the same init every step
    trainer = build_trainer(Job.of(cfg), logger=False, enable_checkpointing=False)
    trainer.fit(module, dm)
    (m,) = trainer.test(module, dm, verbose=False)
    assert m["test/onestep_inits"] == 1 and m["test/onestep_random_init_inits"] == 3
    d = module.to_distilled({})
    assert d.fixed_init is not None and set(d.fixed_init) == set(module.loop.names)


def test_a_given_direct_minimum_is_used_and_copied_into_the_run(digits_run, tmp_path):
    """direct.checkpoint skips training the baseline: its metrics are reported and its weights copied
    into the run dir, where the run's analyses look for the direct minimum."""
    from conftest import DIGITS_RUN_OVERRIDES
    from distillscape.artifacts import read_json, read_tensors
    from distillscape.tasks.distill import distill

    metrics = distill(compose_cfg("distill", [*DIGITS_RUN_OVERRIDES, "distill.steps=2", "distill.val_every=2",
                                           f"direct.checkpoint={digits_run}"], tmp_path))
    given = read_json(digits_run / "direct_minimum.json")
    assert metrics["direct/acc"] == given["metrics"]["direct/acc"]
    a, b = read_tensors(tmp_path / "direct_minimum.safetensors"), read_tensors(digits_run / "direct_minimum.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_json(tmp_path / "direct_minimum.json")["copied_from"] == str(digits_run.absolute())
