"""Cost-surface sweeps: oracle checks against a slow per-point evaluation, shards / resume / merge,
the experiment configs end to end on digits, and the CLI."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from conftest import REPO, compose_cfg
from distillscape.artifacts import load_distilled, read_tensors
from distillscape.costs import Cost, CrossEntropyCost, InnerLossCost
from distillscape.data import TensorDataModule
from distillscape.geometry import flatten, grid_coordinates, points, random_direction, swept_state, unflatten
from distillscape.inner import inner_loss
from distillscape.landscape import (LandscapeModule, compute_shard, grid_axes, merge_shards, missing_shards, read_npz,
                                    shard_path, shard_range)
from distillscape.models import MLP, ConvNet, SimpleConvNet
from distillscape.resume import fingerprint


@pytest.fixture(scope="module")
def digits():
    dm = TensorDataModule("digits", val_size=200)
    dm.setup()
    return dm


def predict_trainer():
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_checkpointing=False, enable_model_summary=False)


def sweep_module(net, dm, batching, seed=0, data_batch=300):
    """A plane of two filter-normalized directions around a random point, on train + a distilled-like batch."""
    torch.manual_seed(seed)
    centre, _ = swept_state(net)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.stack([flatten(random_direction(centre, g)) for _ in range(2)])
    batch_x, batch_y = torch.randn(10, *dm.image_shape, generator=g), torch.randn(10, 10, generator=g)
    costs = [CrossEntropyCost("train", dm.train_x[:700], dm.train_y[:700]),
             InnerLossCost("distilled", batch_x, batch_y, "mse")]
    return LandscapeModule(copy.deepcopy(net), flatten(centre), dirs, centre, costs, batching=batching,
                           data_batch=data_batch)


def slow_point(net, vec, like, x, y):
    """The obviously-correct way: copy the model, load the perturbed weights, loop over a DataLoader."""
    model = copy.deepcopy(net)
    model.load_state_dict({k: v.clone() for k, v in unflatten(vec, like).items()})
    total, correct = 0.0, 0
    with torch.no_grad():
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=97):
            out = model(xb)
            total += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    return total / len(y), correct / len(y)


@pytest.mark.parametrize("make", [lambda: MLP(1, 8, 8, 10), lambda: SimpleConvNet(1, 8, 8, 10)])
@pytest.mark.parametrize("batching", ["vmap", "loop", "channels_last"])
def test_grid_values_equal_slow_per_point_evaluation(digits, make, batching):
    net = make()
    module = sweep_module(net, digits, batching)
    axes = grid_axes([[-1, 1], [-1, 1]], [5, 5])
    coords = grid_coordinates(axes)
    pick = torch.tensor([0, 7, 12, 19, 24])  # 12 is the centre (0, 0)
    got = module.evaluate(points(module.centre, module.directions, coords[pick].float()), batching)
    like = swept_state(net)[0]
    x, y = module.cost0_x, module.cost0_y
    for j, i in enumerate(pick):
        vec = points(module.centre, module.directions, coords[i:i + 1].float())[0]
        loss, acc = slow_point(net, vec, like, x, y)
        assert got["train/loss"][j].item() == pytest.approx(loss, rel=1e-5)
        assert got["train/acc"][j].item() == pytest.approx(acc, abs=1e-9)
        model = copy.deepcopy(net)
        model.load_state_dict(unflatten(vec, like))
        with torch.no_grad():
            inner = F.mse_loss(model(module.cost1_x), module.cost1_y).item()
        assert got["distilled/loss"][j].item() == pytest.approx(inner, rel=1e-5)
    # the value at (0, 0) is the loss of the centre itself
    centre_loss, _ = slow_point(net, module.centre, like, x, y)
    assert got["train/loss"][2].item() == pytest.approx(centre_loss, rel=1e-5)
    with torch.no_grad():
        assert got["distilled/loss"][2].item() == pytest.approx(inner_loss(net(module.cost1_x), module.cost1_y, "mse").item(),
                                                              rel=1e-5)


@pytest.mark.parametrize("make", [lambda: SimpleConvNet(3, 8, 8, 10), lambda: ConvNet(3, 8, 8, 10, width_channels=8, depth=2)])
def test_channels_last_path_computes_the_same_function(make):
    """Channels-last weights and the (H, W, C)-order flatten of the features change only the order of
    the sums, on multi-channel input too; the net given to the module is left as it was."""
    torch.manual_seed(0)
    net = make()
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,))
    centre, _ = swept_state(net)
    dirs = torch.stack([flatten(random_direction(centre, torch.Generator().manual_seed(i))) for i in range(2)])
    module = LandscapeModule(net, flatten(centre), dirs, centre, [CrossEntropyCost("train", x, y)], data_batch=16)
    vecs = points(module.centre, module.directions, torch.rand(3, 2))
    plain, cl = module.evaluate(vecs, "loop"), module.evaluate(vecs, "channels_last")
    torch.testing.assert_close(cl["train/loss"], plain["train/loss"], rtol=1e-5, atol=0)
    assert torch.equal(cl["train/acc"], plain["train/acc"])
    assert not net.channels_last and not any(getattr(m, "inplace", False) for m in net.modules())


@pytest.mark.parametrize("shape,make,expected", [((1, 28, 28), lambda: SimpleConvNet(1, 28, 28, 10), ("channels_last", 128)),
                                                 ((1, 8, 8), lambda: SimpleConvNet(1, 8, 8, 10), ("vmap", 300)),
                                                 ((1, 8, 8), lambda: MLP(1, 8, 8, 10), ("vmap", 300))])
def test_auto_batching_takes_the_rules_path_bit_for_bit(tmp_path, shape, make, expected):
    """batching=auto is the path and data batch of the fixed rule (on a CPU: channels-last on forwards of
    128 examples for conv nets with large layer outputs, vmap at data_batch for the others), never a
    timing: its shard holds the values the pinned path computes, bit for bit, and says how they were
    computed; a sweep's later shards take the path its finished shards took."""
    from distillscape.landscape import recorded_batching

    torch.manual_seed(0)
    net = make()
    x, y = torch.randn(400, *shape), torch.randint(0, 10, (400,))
    centre, _ = swept_state(net)
    dirs = torch.stack([flatten(random_direction(centre, torch.Generator().manual_seed(i))) for i in range(2)])
    axes = grid_axes([[-1, 1], [-1, 1]], [3, 3])
    coords = grid_coordinates(axes)
    values = {}
    for batching, data_batch in (("auto", 300), expected):
        module = LandscapeModule(net, flatten(centre), dirs, centre, [CrossEntropyCost("train", x, y)],
                                 batching=batching, data_batch=data_batch)
        fp = fingerprint(module.centre, module.directions, *axes, data=[module.metric_names, {}])
        path, _ = compute_shard(module, predict_trainer(), coords, 0, 2, tmp_path / batching, fp, points_per_batch=4)
        values[batching] = read_npz(path)
        assert (str(values[batching]["batching"]), int(values[batching]["data_batch"])) == expected
        assert recorded_batching(tmp_path / batching, 2, fp) == expected
    for m in module.metric_names:
        assert np.array_equal(values["auto"][m], values[expected[0]][m]), m


def test_shards_resume_and_merge_bit_for_bit(digits, tmp_path):
    module = sweep_module(SimpleConvNet(1, 8, 8, 10), digits, "vmap")
    axes = grid_axes([[-1, 1], [-0.5, 0.5]], [5, 4])
    coords = grid_coordinates(axes)
    fp = fingerprint(module.centre, module.directions, *axes, data=[module.metric_names, {}])
    meta = {"centre_name": np.array("test")}
    trainer = predict_trainer()
    assert [shard_range(20, i, 3) for i in range(3)] == [(0, 7), (7, 13), (13, 20)]

    # uninterrupted
    for i in range(3):
        compute_shard(module, trainer, coords, i, 3, tmp_path / "full", fp, points_per_batch=3)
    full = read_npz(merge_shards(tmp_path / "full", 3, fp, axes, module.metric_names, meta))
    assert str(full["batching"]) == "vmap" and full["data_batch"].tolist() == [300]  # how it was computed

    # interrupted after shard 0 and 2; merging now refuses, naming the missing shard
    for i in (0, 2):
        compute_shard(module, trainer, coords, i, 3, tmp_path / "resumed", fp, points_per_batch=3)
    assert missing_shards(tmp_path / "resumed", 3, fp) == [1]
    with pytest.raises(Exception, match="shard=1"):
        merge_shards(tmp_path / "resumed", 3, fp, axes, module.metric_names, meta)
    before = {i: shard_path(tmp_path / "resumed", i, 3).stat().st_mtime_ns for i in (0, 2)}
    computed = [compute_shard(module, trainer, coords, i, 3, tmp_path / "resumed", fp, points_per_batch=3)[1]
                for i in range(3)]
    assert computed == [False, True, False]  # only the missing shard was computed
    assert {i: shard_path(tmp_path / "resumed", i, 3).stat().st_mtime_ns for i in (0, 2)} == before
    resumed = read_npz(merge_shards(tmp_path / "resumed", 3, fp, axes, module.metric_names, meta))
    for m in module.metric_names:
        assert resumed[m].shape == (5, 4) and np.array_equal(resumed[m], full[m])
    assert not list((tmp_path / "resumed" / "shards").glob(".*.tmp"))  # atomic writes leave no temp files

    # a shard of another sweep in the same directory is refused
    other = fingerprint(module.centre, 2 * module.directions, *axes, data=[module.metric_names, {}])
    with pytest.raises(Exception, match="different sweep"):
        compute_shard(module, trainer, coords, 0, 3, tmp_path / "resumed", other, points_per_batch=3)


def rollout_step(x, logits):
    """A toy environment: the next observations [..., B, C, H, W] follow from the policy's logits [..., B, K]."""
    return 0.9 * x + 0.1 * torch.tanh(logits.mean(-1))[..., None, None, None]


class RolloutCost(Cost):
    """A cost the landscape code was not written for: every point drives observations of its own (as
    a policy does its own environments) for a few steps; the score is the summed mean logit."""

    def __init__(self, name, x0, steps=3):
        super().__init__(name)
        self.x0, self.steps = x0, steps

    @property
    def metrics(self):
        return [f"{self.name}/return"]

    def tensors(self):
        return {"x0": self.x0}

    def evaluate(self, models, data, max_examples=None):
        x0 = data["x0"][:max_examples]
        xs = x0.expand(models.count, *x0.shape)  # [M, B, ...]: the same start for every point
        total = torch.zeros(models.count, dtype=torch.float64, device=xs.device)
        for _ in range(self.steps):
            logits = models.forward_each(xs)
            total += logits.mean((1, 2)).double()
            xs = rollout_step(xs, logits)
        return {f"{self.name}/return": total}


def slow_rollout(model, x0, steps=3):
    total, x = 0.0, x0
    with torch.no_grad():
        for _ in range(steps):
            logits = model(x)
            total += logits.mean().item()
            x = rollout_step(x, logits)
    return total


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_a_new_kind_of_cost_plugs_in_unchanged(digits, tmp_path, batching):
    """A Cost subclass written here, with per-point inputs, runs through LandscapeModule, compute_shard
    and merge_shards as they are, beside a built-in cost; its values are those of a per-point loop."""
    net = MLP(1, 8, 8, 10)
    centre, _ = swept_state(net)
    g = torch.Generator().manual_seed(0)
    dirs = torch.stack([flatten(random_direction(centre, g)) for _ in range(2)])
    x0, x, y = digits.train_x[:32], digits.train_x[:100], digits.train_y[:100]
    module = LandscapeModule(net, flatten(centre), dirs, centre, [RolloutCost("rollout", x0), CrossEntropyCost("train", x, y)],
                             batching=batching, data_batch=64)
    assert module.metric_names == ["rollout/return", "train/loss", "train/acc"]
    axes = grid_axes([[-1, 1], [-1, 1]], [3, 4])
    coords = grid_coordinates(axes)
    fp = fingerprint(module.centre, module.directions, *axes, data=[module.metric_names, {}])
    for i in range(2):
        compute_shard(module, predict_trainer(), coords, i, 2, tmp_path, fp, points_per_batch=5)
    surface = read_npz(merge_shards(tmp_path, 2, fp, axes, module.metric_names, {}))
    like = swept_state(net)[0]
    for i in range(len(coords)):
        vec = points(module.centre, module.directions, coords[i:i + 1].float())[0]
        model = copy.deepcopy(net)
        model.load_state_dict({k: v.clone() for k, v in unflatten(vec, like).items()})
        assert surface["rollout/return"].flat[i] == pytest.approx(slow_rollout(model, x0), rel=1e-5, abs=1e-6)
        loss, acc = slow_point(net, vec, like, x, y)
        assert surface["train/loss"].flat[i] == pytest.approx(loss, rel=1e-5)
        assert surface["train/acc"].flat[i] == pytest.approx(acc, abs=1e-9)


# -- the task and the experiment configs, end to end on digits ------------------------------------------
TINY = ["logger=none", "landscape.data_batch=2000"]


def test_cost_registry_names_every_sweep_cost_and_hands_back_warnings(digits_run, tmp_path, capsys):
    """sweep.costs' names are the registry's (config cannot import costs: the lists are kept twice); a cost with
    something to say returns it as a warning line instead of printing it."""
    from distillscape.config import DATASET_COSTS, RL_COSTS, SWEEP_COSTS, settings
    from distillscape.costs import SWEEP_COST_CLASSES, build_costs
    from distillscape.run import Run

    assert sorted(SWEEP_COST_CLASSES) == sorted(SWEEP_COSTS)
    assert sorted(k for k, c in SWEEP_COST_CLASSES.items() if c.kind == "rl") == sorted(RL_COSTS)
    assert sorted(k for k, c in SWEEP_COST_CLASSES.items() if c.kind == "dataset") == sorted(DATASET_COSTS)
    s = settings(compose_cfg("landscape", [f"distilled={digits_run}", "sweep.costs=[train_subsets,test,distilled]",
                                           "landscape.subset_sizes=[10,100000]"], tmp_path))
    run = Run.open(digits_run)
    dm = run.datamodule(s.dataset)
    capsys.readouterr()
    built = build_costs(s, run, dm)
    assert [c.name for c in built.costs] == ["train_subset10", "test", "distilled"]
    assert built.warnings == [f"train_subsets: digits has {len(dm.train_y)} training images; sizes [100000] skipped"]
    assert capsys.readouterr().out == ""


def run_landscape(run_dir, out, overrides):
    from distillscape.tasks.landscape import landscape
    return landscape(compose_cfg("landscape", [f"distilled={run_dir}", *TINY, *overrides], out))


@pytest.mark.parametrize("experiment,centres,metrics", [
    ("surfaces_2x2", ["minimum", "landing"], ["train/loss", "train/acc", "distilled/loss"]),
    ("plane_minima", ["minimum"], ["train/loss", "distilled/loss"]),
    ("surface_evolution", ["landing"], ["distilled_step000000/loss", "distilled/loss", "random_batch/loss"]),
    ("surface_subsets", ["minimum"], ["train_subset10/loss", "train_subset1000/acc", "train/loss"]),
])
def test_experiment_configs_run_end_to_end(digits_run, tmp_path, experiment, centres, metrics):
    paths = run_landscape(digits_run, tmp_path, [f"experiment={experiment}", "sweep.resolution=[3,3]"])
    assert [p.parent.name for p in paths] == centres
    for p in paths:
        s = read_npz(p)
        for m in metrics:
            assert s[m].shape == (3, 3) and np.isfinite(s[m]).all()
        assert (p.parent / f"{metrics[0].replace('/', '_')}.png").stat().st_size > 0
        d = read_tensors(p.parent / "directions.safetensors")
        # any point can be recomputed from the saved centre and directions
        assert d["directions"].shape[0] == 2 and d["centre"].shape == d["directions"].shape[1:]
    if experiment == "plane_minima":  # delta = landing - minimum: the landing sits at (1, 0)
        s = read_npz(paths[0])
        names = list(s["marked_names"])
        assert np.allclose(s["marked_coords"][names.index("landing")], [1.0, 0.0], atol=1e-4)
        assert np.allclose(s["marked_coords"][names.index("minimum")], [0.0, 0.0], atol=1e-6)


def test_landing_centre_is_the_one_step_landing(digits_run, tmp_path):
    """The surface centred on the landing has, at (0, 0), the distilled loss of one inner step from the init."""
    from distillscape.inner import InitSampler, InnerLoop, unstack
    from distillscape.run import net_from_meta

    paths = run_landscape(digits_run, tmp_path, ["sweep.centres=[landing]", "sweep.costs=[distilled]",
                                                 "sweep.resolution=[3,3]"])
    d = load_distilled(digits_run)
    net = net_from_meta(d.meta)
    init = unstack(InitSampler(net, d.meta["inner"]["init_scheme"]).sample(1, seed=0), 0)
    landed = InnerLoop(net, d.meta["inner"]["loss"]).run(init, d.images, d.labels, d.lrs)
    net.load_state_dict({k: v.detach() for k, v in landed.items()})
    with torch.no_grad():
        expected = inner_loss(net(d.images), d.labels, d.meta["inner"]["loss"]).item()
    assert read_npz(paths[0])["distilled/loss"][1, 1] == pytest.approx(expected, rel=1e-5)


def test_task_shards_merge_equal_unsharded_run(digits_run, tmp_path):
    common = ["sweep=through", "sweep.resolution=[4,3]", "sweep.costs=[test]", "landscape.batching=loop",
              f"landscape.out_dir={tmp_path / 'sharded'}"]
    assert run_landscape(digits_run, tmp_path / "a", [*common, "shard=1", "num_shards=2"]) == []  # waits for shard 0
    merged = run_landscape(digits_run, tmp_path / "b", [*common, "shard=0", "num_shards=2"])
    whole = run_landscape(digits_run, tmp_path / "c", common[:-1] + [f"landscape.out_dir={tmp_path / 'whole'}"])
    a, b = read_npz(merged[0]), read_npz(whole[0])
    assert np.array_equal(a["test/loss"], b["test/loss"]) and np.array_equal(a["test/acc"], b["test/acc"])
    # the plane through minimum, landing and init holds all three, at their exact coordinates
    assert np.all(a["marked_offplane"] < 1e-4)
    d = read_tensors(merged[0].parent / "directions.safetensors")
    for name, xy in zip(a["marked_names"], a["marked_coords"]):
        rebuilt = d["centre"] + torch.tensor(xy, dtype=torch.float32) @ d["directions"]
        assert torch.allclose(rebuilt, d[f"point.{name}"], atol=1e-4)


def test_later_shards_take_the_path_of_the_finished_ones(digits_run, tmp_path):
    """A sweep's shards run on other days or with another landscape.batching are computed the way its first
    finished shard was (the paths round differently): the surface is the one computed in one piece that way."""
    common = ["sweep=through", "sweep.resolution=[4,3]", "sweep.costs=[test]"]
    out = f"landscape.out_dir={tmp_path / 'sharded'}"
    run_landscape(digits_run, tmp_path / "a", [*common, "landscape.batching=loop", "landscape.data_batch=50", out,
                                               "shard=0", "num_shards=2"])
    [merged] = run_landscape(digits_run, tmp_path / "b", [*common, out, "shard=1", "num_shards=2"])  # auto: vmap
    [whole] = run_landscape(digits_run, tmp_path / "c", [*common, "landscape.batching=loop", "landscape.data_batch=50",
                                                         f"landscape.out_dir={tmp_path / 'whole'}"])
    a, b = read_npz(merged), read_npz(whole)
    assert str(a["batching"]) == "loop" and a["data_batch"].tolist() == [50]
    assert np.array_equal(a["test/loss"], b["test/loss"]) and np.array_equal(a["test/acc"], b["test/acc"])


def test_multi_device_run_deals_points_out_and_equals_single_device(digits_run, tmp_path):
    """trainer.devices=2 trainer.strategy=ddp (two CPU processes, gloo): each computes the points
    Lightning's sampler deals it, rank 0 assembles the shard; the surface equals a one-process run."""
    common = ["sweep=through", "sweep.resolution=[4,3]", "sweep.costs=[test]", "landscape.batching=loop", "logger=none"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ddp = subprocess.run([sys.executable, "-m", "distillscape.tasks.landscape", f"distilled={digits_run}", *common,
                          "trainer.devices=2", "trainer.strategy=ddp", f"hydra.run.dir={tmp_path / 'ddp'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    [surface] = list((tmp_path / "ddp").glob("*/surface.npz"))
    [shard] = list(surface.parent.glob("shards/*.npz"))  # the part files are gone
    assert int(read_npz(shard)["processes"]) == 2
    whole = run_landscape(digits_run, tmp_path / "one", [*common, f"landscape.out_dir={tmp_path / 'whole'}"])
    a, b = read_npz(surface), read_npz(whole[0])
    assert np.array_equal(a["test/loss"], b["test/loss"]) and np.array_equal(a["test/acc"], b["test/acc"])


def test_cli_runs_a_line_and_rejects_bad_input(digits_run, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    exe = [sys.executable, "-m", "distillscape.tasks.landscape"]
    ok = subprocess.run([*exe, f"distilled={digits_run}", "sweep=line", "sweep.resolution=[5]", "sweep.costs=[train]",
                         "logger=none", f"hydra.run.dir={tmp_path / 'line'}"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    s = read_npz(tmp_path / "line" / "minimum" / "surface.npz")
    assert s["train/loss"].shape == (5,) and s["axis0"][0] == -0.5 and s["axis0"][-1] == 1.5


def test_bad_input_is_one_clear_line(digits_run, tmp_path, capsys):
    from distillscape.tasks.landscape import main
    for overrides, says in ((["logger=none"], "run distillscape-distill first"),
                            ([f"distilled={digits_run}", "dataset=mnist", "logger=none"], "add dataset=digits"),
                            ([f"distilled={digits_run}", "shard=2", "num_shards=2"], "shard=2 must be in"),
                            ([f"distilled={digits_run}", "sweep.costs=[nonsense]"], "sweep.costs entry")):
        with pytest.raises(SystemExit) as e:
            main(compose_cfg("landscape", overrides, tmp_path))
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_sigterm_stops_a_sweep_with_143_and_writes_nothing_half_done(digits_run, tmp_path):
    """Lightning's predict loop ignores its own SIGTERM flag: a terminated sweep (scancel, a time
    limit) used to run on to the end of its grid. It now stops at the next batch of points."""
    import signal
    import time
    out = tmp_path / "big"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "distillscape.tasks.landscape", f"distilled={digits_run}",
                             "sweep=plane", "sweep.resolution=[400,400]", "sweep.costs=[train]", "sweep.centres=minimum",
                             "landscape.batching=loop", "logger=none", f"hydra.run.dir={out}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        directions = out / "minimum" / "directions.safetensors"  # written just before the grid starts
        deadline = time.monotonic() + 120
        while not directions.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert directions.exists(), proc.communicate(timeout=5)[1][-2000:] if proc.poll() is not None else "no start"
        time.sleep(2.0)  # inside trainer.predict by now (160,000 points take minutes)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert time.monotonic() - sent < 30
    assert "stopped by SIGTERM" in err
    # the interrupted shard and surface were never written, so a rerun computes them whole
    assert not (out / "minimum" / "surface.npz").exists()
    assert not list((out / "minimum").glob("shards/*.npz"))
