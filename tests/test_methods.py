"""The other distillers (matching.py), the evaluation protocols (protocols.py) and imported sets
(imported.py), each against a slow, obviously correct computation: hand-written losses, torch.optim.SGD,
finite differences, files written in the published layouts."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from distillscape.artifacts import ArtifactError, read_json
from distillscape.config import EvalConfig
from distillscape.distill import label_targets
from distillscape.imported import read_imported
from distillscape.inner import InnerLoop, evaluate_stack
from distillscape.matching import dm_loss, gm_loss, mtt_loss, student_steps, trajectory_loss
from distillscape.models import MLP
from distillscape.params import as_stack_of_one, unstack
from distillscape.protocols import momentum_sgd_stack, random_subsets, train_with_protocol
from distillscape.run import Run
from distillscape.seeds import seed_for
from conftest import compose_cfg


def tiny(dtype=torch.float32, hidden=6, seed=0):
    """A 1x3x3-input MLP with one hidden layer, its inner loop and its parameters."""
    torch.manual_seed(seed)
    net = MLP(1, 3, 3, 4, hidden=[hidden]).to(dtype)
    loop = InnerLoop(net, "mse")
    return net, loop, {k: v.detach().clone() for k, v in net.named_parameters()}


def test_dm_loss_is_the_squared_difference_of_class_mean_embeddings():
    net, loop, params = tiny()
    g = torch.Generator().manual_seed(1)
    x_real, y_real = torch.randn(12, 1, 3, 3, generator=g), torch.tensor([0, 1, 2] * 4)  # class 3 has no real image
    x_syn, y_syn = torch.randn(8, 1, 3, 3, generator=g), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    w, b = params["net.1.weight"], params["net.1.bias"]

    def features(x):  # the penultimate layer of MLP by hand: ReLU of the hidden layer
        return torch.relu(x.flatten(1) @ w.T + b)

    expected = sum(((features(x_real[y_real == c]).mean(0) - features(x_syn[y_syn == c]).mean(0)) ** 2).sum()
                   for c in (0, 1, 2))
    assert dm_loss(loop, params, x_real, y_real, x_syn, y_syn, 4).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mtt_student_steps_are_torch_sgd_and_its_loss_is_the_normalized_distance():
    net, loop, params = tiny()
    g = torch.Generator().manual_seed(2)
    images, targets = torch.randn(6, 1, 3, 3, generator=g), F.one_hot(torch.arange(6) % 4, 4).float()
    batches = [None, torch.tensor([0, 3, 5]), torch.tensor([1, 2]), None]
    ours = student_steps(loop, params, images, targets, torch.tensor(0.3), batches)
    ref = copy.deepcopy(net)
    opt = torch.optim.SGD(ref.parameters(), lr=0.3)
    for idx in batches:
        x, t = (images, targets) if idx is None else (images[idx], targets[idx])
        opt.zero_grad()
        F.mse_loss(ref(x), t).backward()
        opt.step()
    for k, p in ref.named_parameters():
        torch.testing.assert_close(ours[k], p.detach(), rtol=1e-5, atol=1e-6)
    start, target, student = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 6.0]), torch.tensor([3.0, 5.0])
    assert trajectory_loss(student, start, target).item() == pytest.approx((1 + 1) / (9 + 16))


def test_each_methods_hypergradient_matches_finite_differences():
    """d loss / d images (and d loss / d log rate for mtt) by autograd through each objective, against central
    differences on a few coordinates, in float64."""
    net, loop, params = tiny(torch.float64)
    g = torch.Generator().manual_seed(3)
    x_real = torch.randn(8, 1, 3, 3, generator=g, dtype=torch.float64)
    y_real = torch.tensor([0, 1, 2, 3] * 2)
    t_real = label_targets(y_real, 4, "mse", hard=True).double()
    y_syn = torch.tensor([0, 1, 2, 3])
    t_syn = label_targets(y_syn, 4, "mse", hard=True).double()
    images = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    target = {k: v + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in params.items()}
    log_lr = torch.tensor(math.log(0.2), dtype=torch.float64)
    objectives = {
        "dm": lambda im, lr: dm_loss(loop, params, x_real, y_real, im, y_syn, 4),
        "gm": lambda im, lr: gm_loss(loop, params, x_real, t_real, y_real, im, t_syn, y_syn, 4),
        "mtt": lambda im, lr: mtt_loss(loop, params, target, im, t_syn, lr, [None, torch.tensor([0, 2]), None]),
        "meta": lambda im, lr: F.cross_entropy(loop.forward(loop.run(params, im, t_syn, lr.exp().view(1, 1)), x_real),
                                               y_real),
    }
    for name, f in objectives.items():
        im, lr = images.clone().requires_grad_(), log_lr.clone().requires_grad_()
        d_im, d_lr = torch.autograd.grad(f(im, lr), [im, lr], allow_unused=True)
        eps = 1e-6
        for i in (0, 7, 20, 35):
            bump = torch.zeros_like(images).view(-1)
            bump[i] = eps
            bump = bump.view_as(images)
            fd = (f(images + bump, log_lr) - f(images - bump, log_lr)).item() / (2 * eps)
            assert d_im.view(-1)[i].item() == pytest.approx(fd, rel=1e-4, abs=1e-8), (name, i)
        if name in ("mtt", "meta"):
            fd = (f(images, log_lr + eps) - f(images, log_lr - eps)).item() / (2 * eps)
            assert d_lr.item() == pytest.approx(fd, rel=1e-4, abs=1e-8), name


def test_yang_protocol_is_torch_sgd_with_momentum_on_each_init():
    net, loop, _ = tiny()
    g = torch.Generator().manual_seed(4)
    images, targets = torch.randn(5, 1, 3, 3, generator=g), F.one_hot(torch.arange(5) % 4, 4).float()
    from distillscape.inner import InitSampler
    inits = InitSampler(net).sample(3, seed=0)
    e = EvalConfig(protocol="yang")
    landed = train_with_protocol(loop, inits, images, targets, torch.ones(1, 1), e, chunk_size=2)
    for i in range(3):
        ref = copy.deepcopy(net)
        ref.load_state_dict(unstack(inits, i))
        opt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
        for _ in range(300):  # Yang et al.'s 300 full-batch steps
            opt.zero_grad()
            F.mse_loss(ref(images), targets).backward()
            opt.step()
        for k, p in ref.named_parameters():
            torch.testing.assert_close(landed[k][i], p.detach(), rtol=1e-4, atol=1e-5)


def test_minibatch_protocol_follows_its_subsets_as_torch_sgd_would():
    net, loop, params = tiny()
    g = torch.Generator().manual_seed(5)
    images, targets = torch.randn(6, 1, 3, 3, generator=g), F.one_hot(torch.arange(6) % 4, 4).float()
    subsets = random_subsets(2, 7, 6, 4, seed=9)
    assert subsets.shape == (2, 7, 4) and all(len(set(s.tolist())) == 4 for s in subsets.flatten(0, 1))
    stack = {k: torch.stack([v, v + 0.1]) for k, v in params.items()}
    landed = momentum_sgd_stack(loop, stack, images, targets, torch.tensor([0.05]), 0.9, 7, subsets)
    for i in range(2):
        ref = copy.deepcopy(net)
        ref.load_state_dict(unstack(stack, i))
        opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
        for t in range(7):
            opt.zero_grad()
            F.mse_loss(ref(images[subsets[i, t]]), targets[subsets[i, t]]).backward()
            opt.step()
        for k, p in ref.named_parameters():
            torch.testing.assert_close(landed[k][i], p.detach(), rtol=1e-5, atol=1e-6)


# -- imported sets ----------------------------------------------------------------------------------------------
def write_mtt_layout(directory, images, labels, lr=None):
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(images, directory / "images_best.pt")
    torch.save(labels, directory / "labels_best.pt")
    if lr is not None:
        torch.save(torch.tensor(lr), directory / "lr_best.pt")
    return directory


def test_imported_files_of_mtt_and_dc_bench_layouts_round_trip(tmp_path):
    images, labels = torch.randn(20, 1, 8, 8), torch.arange(10).repeat(2)
    got = read_imported(write_mtt_layout(tmp_path / "mtt", images, labels, lr=0.03), 10, (1, 8, 8))
    assert torch.equal(got.images, images) and torch.equal(got.labels, labels) and got.lr == pytest.approx(0.03)
    assert got.source == "mtt"
    other = torch.randn(20, 1, 8, 8)
    torch.save({"data": [(other, labels), (images, labels)]}, tmp_path / "res_DM_digits_MLP_2ipc.pt")
    got = read_imported(tmp_path / "res_DM_digits_MLP_2ipc.pt", 10, (1, 8, 8))
    assert torch.equal(got.images, images) and got.lr is None and got.source == "dc_bench"  # the last pair
    assert torch.equal(read_imported(tmp_path / "res_DM_digits_MLP_2ipc.pt", 10, (1, 8, 8), index=0).images, other)
    soft = torch.softmax(torch.randn(20, 10), -1)
    write_mtt_layout(tmp_path / "soft", images, soft)
    assert torch.equal(read_imported(tmp_path / "soft", 10, (1, 8, 8)).labels, soft)


@pytest.mark.parametrize("case, expected", [
    ("wrong_shape", "images are [1, 28, 28], the dataset's [1, 8, 8]"),
    ("label_range", "labels range over [0, 11]"),
    ("label_count", "labels must be [n] class indices"),
    ("no_labels", "without labels_best.pt"),
    ("bad_lr", "the learning rate must be one positive number"),
    ("not_dc_bench", "is not DC-BENCH's layout"),
    ("nan", "images hold NaN or inf"),
])
def test_a_malformed_import_is_one_line_naming_what_is_wrong(tmp_path, case, expected):
    images, labels = torch.randn(20, 1, 8, 8), torch.arange(10).repeat(2)
    path = tmp_path / case
    if case == "wrong_shape":
        write_mtt_layout(path, torch.randn(20, 1, 28, 28), labels)
    elif case == "label_range":
        write_mtt_layout(path, images, torch.arange(12).repeat(2)[:20])
    elif case == "label_count":
        write_mtt_layout(path, images, labels[:15])
    elif case == "no_labels":
        path.mkdir()
        torch.save(images, path / "images_best.pt")
    elif case == "bad_lr":
        write_mtt_layout(path, images, labels, lr=-0.1)
    elif case == "not_dc_bench":
        path = tmp_path / "x.pt"
        torch.save({"images": images}, path)
    else:
        images[3, 0, 0, 0] = float("nan")
        write_mtt_layout(path, images, labels)
    with pytest.raises(ArtifactError) as e:
        read_imported(path, 10, (1, 8, 8))
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_an_imported_set_runs_the_whole_job_and_its_run_lands_by_its_protocol(tmp_path):
    """distill.method=import evaluates a set made elsewhere and writes the usual run: its recorded Yang-protocol
    accuracy is what Run.land (the analyses' landing) gives from the same held-out inits."""
    from distillscape.data import TensorDataModule
    from distillscape.tasks.distill import distill

    dm = TensorDataModule("digits")
    dm.setup()
    images, labels = dm.class_balanced_sample(1, torch.Generator().manual_seed(0))
    source = write_mtt_layout(tmp_path / "made_elsewhere", images, labels, lr=0.5)
    out = tmp_path / "run"
    metrics = distill(compose_cfg("distill", ["arch=mlp", "logger=none", "direct.epochs=1", "distill.method=import",
                                              f"distill.imported.path={source}", "distill.eval.protocol=yang",
                                              "distill.eval.yang_steps=30", "snapshot_every=0"], out))
    run = Run.open(out)
    assert run.meta["method"] == "import" and torch.equal(run.distilled.images, images)
    assert run.distilled.lrs.flatten().tolist() == pytest.approx([0.5])
    inits = run.inits(100, seed=seed_for(run.meta["config"]["distill"]["eval_seed"], "eval", "test_inits"))
    loop = run.loop()
    for protocol, key in ((None, "yang"), (EvalConfig(), "onestep")):
        acc, _ = evaluate_stack(loop, run.land(inits, loop, protocol=protocol), dm.test_x, dm.test_y)
        assert metrics[f"test/{key}_acc_mean"] == pytest.approx(acc.mean().item(), abs=1e-6), key
    assert metrics["test/yang_acc_ci95_low"] < metrics["test/yang_acc_mean"] < metrics["test/yang_acc_ci95_high"]
    assert read_json(out / "metrics.json") == metrics and (out / "direct_minimum.safetensors").exists()


def test_mtt_resumes_from_its_checkpoint_as_if_never_stopped_and_reuses_its_experts(tmp_path):
    """A trajectory-matching run stopped after 4 outer steps and resumed (ckpt_path=last) to 6 ends with the
    images of an unbroken 6-step run; the resumed run reads the expert trajectories instead of retraining them."""
    from distillscape.config import settings
    from distillscape.data import TensorDataModule
    from distillscape.job import Job
    from distillscape.tasks.distill import resume_checkpoint, run_distillation

    common = ["arch=mlp", "logger=none", "distill.method=mtt", "distill.optim.schedule=constant", "distill.val_every=100",
              "distill.eval_inits=4", "distill.val_inits=2", "distill.mtt.experts=2", "distill.mtt.expert_train_epochs=4",
              "distill.mtt.syn_steps=3", "checkpoint_every=2", "snapshot_every=0"]
    dm = TensorDataModule("digits")
    dm.setup()
    images = {}
    for name, steps in (("unbroken", [6]), ("resumed", [4, 6])):
        out = tmp_path / name
        for n in steps:
            cfg = compose_cfg("distill", [*common, f"distill.steps={n}", "ckpt_path=last"], out)
            s = settings(cfg)
            torch.manual_seed(s.seed)
            if n == 6 and name == "resumed":
                expert_mtime = (out / "experts" / "expert_00.safetensors").stat().st_mtime_ns
            job = Job.of(cfg)
            module, _, _, _ = run_distillation(job, dm, resume_checkpoint(job))
            images[f"{name}{n}"] = module.images.detach()
    assert (tmp_path / "resumed" / "experts" / "expert_00.safetensors").stat().st_mtime_ns == expert_mtime
    assert not torch.equal(images["resumed4"], images["resumed6"])  # the resumed steps changed the images
    torch.testing.assert_close(images["resumed6"], images["unbroken6"], rtol=0, atol=0)


def test_k_steps_of_one_is_the_batchs_own_step_and_k_splits_its_rate():
    """k_steps with k=1 is the one step the batch was made for (per-tensor rates included); with k=3 and no
    k_lr, three plain gradient steps at a third of that rate."""
    net, loop, params = tiny()
    g = torch.Generator().manual_seed(6)
    images, targets = torch.randn(5, 1, 3, 3, generator=g), F.one_hot(torch.arange(5) % 4, 4).float()
    lrs = torch.tensor([[0.3, 0.1, 0.2, 0.4]])  # one rate per parameter tensor
    stack = as_stack_of_one(params)
    one = train_with_protocol(loop, stack, images, targets, lrs, EvalConfig(protocol="one_step"))
    k1 = train_with_protocol(loop, stack, images, targets, lrs, EvalConfig(protocol="k_steps", k=1))
    three = train_with_protocol(loop, stack, images, targets, lrs, EvalConfig(protocol="k_steps", k=3))
    by_hand = unstack(stack, 0)
    for _ in range(3):
        by_hand = loop.run(by_hand, images, targets, lrs / 3)
    for k in params:
        torch.testing.assert_close(k1[k], one[k])
        torch.testing.assert_close(three[k][0], by_hand[k])
    assert not torch.allclose(three["net.1.weight"], one["net.1.weight"])
