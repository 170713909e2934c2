"""Checked before work, for every job: a value that cannot work is one line (exit 2) before anything is
computed or written, through the real console scripts (`cli` runs a script's own code path in this process)."""
from __future__ import annotations

import pytest

from test_faults import TINY, cli, finished_run, one_line, tree  # noqa: F401 (finished_run: a fixture)


@pytest.mark.parametrize("task,args,needle", [
    # additions no task reads: refused with the nearest key, not run with the defaults
    ("distill", ["+distil.steps=3"], "unknown key distil.steps: did you mean distill.steps?"),
    ("distill", ["+foo=bar"], "unknown key foo: the task's keys are: arch, baseline"),
    ("train", ["+direct.epoch=3"], "unknown key direct.epoch. Did you mean direct.epochs?"),
    ("landscape", ["+swep.seed=1"], "unknown key swep.seed: did you mean sweep.seed?"),
    ("landing", ["+analysis_inits=3"], "unknown key analysis_inits"),
    ("study", ["+stuy.force=true"], "unknown key stuy.force: did you mean study.force?"),
    # a policy network given a dataset
    ("distill", ["arch=policy_mlp"], "arch PolicyMLP is a policy network for an RL task"),
    ("train", ["arch=atari_actor"], "arch AtariActor is a policy network for an RL task"),
    # the data cannot serve the job: found by reading it, before the baseline trains
    ("distill", ["dataset.val_size=5000"], "dataset.val_size=5000 leaves no training data: digits has 1438"),
    ("train", ["dataset.val_size=1438"], "choose dataset.val_size below 1438"),
    ("distill", ["dataset.train_subset=5"], "dataset.train_subset=5 keeps 5 training images, 0 of class"),
    ("distill", ["dataset.train_subset=30", "distill.images_per_class=3"], "needs 3 of every class"),
])
def test_refused_in_one_line_before_any_work(task, args, needle, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    extra = ["distilled=/nowhere"] if task in ("landscape", "landing") else []
    code, err = cli(task, [*TINY[:2], *args, *extra, "logger=none", f"hydra.run.dir={out}"] if task in ("distill", "train")
                    else [*args, *extra, f"hydra.run.dir={out}"], monkeypatch, capsys)
    assert code == 2 and needle in one_line(err), err
    assert not out.exists() or not tree(out), "a refused job wrote into its directory"  # (Hydra makes it, empty)


def test_a_plus_still_adds_what_is_read(tmp_path, monkeypatch, capsys):
    """A Trainer argument and a study's mapping entry are what a `+` is for: accepted."""
    from distillscape.config import validate
    from conftest import compose_cfg

    validate(compose_cfg("distill", ["+trainer.fast_dev_run=true"], tmp_path))
    validate(compose_cfg("study", ["+study.tasks.landing=none"], tmp_path))


def test_refusals_into_a_finished_run_leave_it_as_it_was(finished_run, monkeypatch, capsys):
    before = tree(finished_run)
    for args in (["+distil.steps=3"], ["arch=policy_mlp"], ["dataset.val_size=5000"]):
        code, err = cli("distill", [*args, f"hydra.run.dir={finished_run}"], monkeypatch, capsys)
        assert code == 2, err
        one_line(err)
    assert tree(finished_run) == before
