"""An RL distillation runs through Lightning's Trainer as a dataset's does: trainer.max_steps bounds it,
its checkpoints hold the batch, the critic, the optimizer and the collector's environments, and a run
stopped by Ctrl-C (the real console script, SIGINT) and resumed with ckpt_path=last ends bit for bit where
an uninterrupted run ends (states, targets, rates, critic, metrics, metric history), reusing its PPO
baseline; a finished run is not redone."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, compose_cfg
from distillscape.artifacts import read_json, read_tensors
from distillscape.config import DistillConfig, EnvConfig, RLConfig
from distillscape.rl import Collector, RLDistiller, one_thread
from distillscape.models import PolicyMLP
from distillscape.tasks.distill import distill
from test_faults import _same_history, one_line

# val_every a multiple of checkpoint_every: the validation due at a checkpoint's step is the resume's edge case
TINY_RL = ["experiment=cartpole", "distill.steps=16", "distill.val_every=8", "distill.val_inits=3",
           "distill.eval_inits=4", "rl.ppo.env_steps=2048", "rl.eval_episodes=2", "rl.baseline_lrs=[0.3]",
           "checkpoint_every=4", "snapshot_every=0", "seed=5", "trainer.log_every_n_steps=1",
           "trainer.enable_progress_bar=false"]
MEASURED = ("seconds", "per_second", "peak_")  # timings and memory: measurements of the process, not results


def results(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(m in k for m in MEASURED)}


@one_thread()
def test_collector_state_dict_continues_the_same_experience():
    """Oracle: a collector restored from another's state_dict (a fresh process's view: new envs, new
    generator) gathers exactly the experience the original gathers next, episodes crossing the cut."""
    env = EnvConfig()
    torch.manual_seed(0)
    d = RLDistiller(PolicyMLP(4, 2), PolicyMLP(4, 1), (4,), 2, DistillConfig(images_per_class=2), RLConfig())
    stack = {k: v.detach() for k, v in d.land(d.sampler.sample(2, seed=1)).items()}
    a = Collector(env, 2, 3, seed=7)
    a.collect(d.loop, stack, 40)
    state = a.state_dict()
    b = Collector(env, 2, 3, seed=123)  # other start states and generator: all of it must come from the state
    b.load_state_dict(state)
    assert b.exact
    ea, eb = a.collect(d.loop, stack, 60), b.collect(d.loop, stack, 60)
    for f in ("obs", "actions", "logp", "rewards", "terminated", "done", "next_obs", "valid"):
        assert torch.equal(getattr(ea, f), getattr(eb, f)), f
    assert ea.episode_returns == eb.episode_returns and ea.done.any()
    a.close(), b.close()


def test_trainer_max_steps_bounds_an_rl_distillation(tmp_path):
    m = distill(compose_cfg("distill", [*TINY_RL, "logger=csv", "trainer.max_steps=3", "distill.eval_inits=2"], tmp_path))
    assert read_json(tmp_path / "distilled.json")["step"] == 3
    steps = {int(r["step"]) for r in _rows(tmp_path) if "train/policy_loss" in r}
    assert steps == {0, 1, 2}, steps  # one logged training row per outer step (log_every_n_steps=1), three steps
    assert m["test/onestep_inits"] == 2 and "val/onestep_return_mean" not in m  # validation (every 8) never came


def _rows(run: Path) -> list[dict]:
    import csv
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


ESTIMATORS = {"ppo": [], "es": ["rl.estimator=es", "rl.es_pairs=4"]}  # es: no collector, the RNG states carry it


@pytest.fixture(scope="module", params=list(ESTIMATORS))
def estimator(request) -> list[str]:
    return ESTIMATORS[request.param]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, estimator) -> Path:
    out = tmp_path_factory.mktemp("rl_uninterrupted")
    distill(compose_cfg("distill", [*TINY_RL, *estimator, "logger=csv"], out))
    return out


def test_ctrl_c_then_resume_is_bit_for_bit_the_uninterrupted_run(tmp_path, uninterrupted, estimator):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "distillscape.tasks.distill", *TINY_RL, *estimator, "logger=csv",
                             f"hydra.run.dir={run}"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["global_step"] >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "What was finished is kept" in one_line(err.split("Detected KeyboardInterrupt")[-1])
    assert not (run / "complete.json").exists()

    state = torch.load(ckpt, weights_only=True)  # plain tensors and data: no pickled objects
    at_checkpoint = state["global_step"]
    assert 4 <= at_checkpoint < 16
    assert {"distiller.states", "distiller.targets", "distiller.log_lrs"} <= set(state["state_dict"])
    assert any(k.startswith("distiller.critic.") for k in state["state_dict"])
    assert state["optimizer_states"][0]["state"] and state["lr_schedulers"]
    assert "RngState" in state["callbacks"]
    if not estimator:  # PPO: the collector's environments and generator are in the checkpoint
        c = state["distillscape_collector"]
        assert c["env"] is not None and c["gen"].dtype == torch.uint8

    direct_before = (run / "direct_minimum.safetensors").stat().st_mtime_ns
    resumed = distill(compose_cfg("distill", [*TINY_RL, *estimator, "logger=csv", "ckpt_path=last"], run))
    assert (run / "direct_minimum.safetensors").stat().st_mtime_ns == direct_before, "the PPO baseline was retrained"
    for f, keys in (("distilled.safetensors", ("images", "labels", "lrs")), ("distilled_critic.safetensors", None)):
        a, b = read_tensors(uninterrupted / f), read_tensors(run / f)
        for k in keys or a:
            assert torch.equal(a[k], b[k]), (f, k, (a[k] - b[k]).abs().max())
    whole = read_json(uninterrupted / "metrics.json")
    assert results(resumed) == results(whole)
    assert whole["test/onestep_return_mean"] > 0 and np.isfinite(whole["random_states/return_mean"])
    _same_history(run, uninterrupted, at_checkpoint)

    # a finished job is not redone: the same command returns its metrics and writes nothing
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    again = distill(compose_cfg("distill", [*TINY_RL, *estimator, "logger=csv", "ckpt_path=last"], run))
    assert again == read_json(run / "metrics.json")
    changed = [p.name for p, t in before.items() if p.stat().st_mtime_ns != t]
    assert changed == [], changed


def test_validation_cadence_leaves_the_training_draws_as_they_are(tmp_path, uninterrupted, estimator):
    """A resume skips the validation due at its checkpoint's step (Lightning's order), so validating must not
    change what training draws: validating every 3 steps instead of every 8 ends with the same batch."""
    distill(compose_cfg("distill", [*TINY_RL, *estimator, "logger=none", "distill.val_every=3"], tmp_path))
    for f in ("distilled.safetensors", "distilled_critic.safetensors"):
        a, b = read_tensors(uninterrupted / f), read_tensors(tmp_path / f)
        assert all(torch.equal(a[k], b[k]) for k in a), f


@pytest.mark.parametrize("override,needle", [("trainer.gradient_clip_val=1.0", "gradient_clip_val does not apply"),
                                             ("trainer.devices=2", "runs on one device")])
def test_trainer_settings_an_rl_distillation_cannot_follow_are_refused_first(tmp_path, override, needle):
    from distillscape.errors import ConfigError
    with pytest.raises(ConfigError, match=needle):
        distill(compose_cfg("distill", [*TINY_RL, "logger=none", override], tmp_path))
    assert not (tmp_path / "direct_minimum.json").exists()  # refused before the PPO baseline was trained
