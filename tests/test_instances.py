"""Instance analysis: nearest neighbours against brute force, likeness statistics on a batch whose
answers are known (real class means, a nearest-class-mean classifier), the model comparisons on
constructed cases, and the whole task on a tiny artifact."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from hydra import compose, initialize_config_dir

from distillscape.tasks.common import CONF_DIR
from distillscape.artifacts import Distilled, read_json, save_distilled
from distillscape.data import TensorDataModule
from distillscape.direct import save_direct_minimum
from distillscape.inner import InitSampler, InnerLoop
from distillscape.instances import (RealReference, agreement_rate, class_means, compare_models, confusion_matrix,
                                    cosine_to_class_means, held_out_real, likeness, nearest_neighbours,
                                    penultimate_features, stack_logits, summarize_stats, symmetric_kl)
from distillscape.models import MLP, SimpleConvNet
from distillscape.plots import distilled_pages


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path):
    """A real config from conf/ (conftest's helper assumes a trainer section, analysis tasks have none)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=[f"paths.output_dir={output_dir}", *overrides])


@pytest.fixture(scope="module")
def digits():
    dm = TensorDataModule("digits")
    dm.setup()
    return dm


def nearest_class_mean_net(means: torch.Tensor) -> MLP:
    """A linear classifier whose argmax is the nearest class mean (Euclidean):
    logit_c = x.m_c - |m_c|^2 / 2, so on x = m_j class j wins with margin |m_j - m_c|^2 / 2 > 0."""
    net = MLP(1, 8, 8, means.shape[0], hidden=[])
    with torch.no_grad():
        net.net[-1].weight.copy_(means)
        net.net[-1].bias.copy_(-(means * means).sum(1) / 2)
    return net


# -- oracles ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [7, 10_000])
def test_nearest_neighbours_match_brute_force(chunk):
    g = torch.Generator().manual_seed(0)
    queries, reference = torch.randn(13, 3, 5, 5, generator=g), torch.randn(250, 3, 5, 5, generator=g)
    dist, idx = nearest_neighbours(queries, reference, k=4, chunk=chunk)
    for q in range(len(queries)):  # the obviously-correct way: every distance, sorted
        d = torch.tensor([((queries[q] - r) ** 2).sum().sqrt().item() for r in reference])
        order = d.argsort()[:4]
        assert idx[q].tolist() == order.tolist()
        assert torch.allclose(dist[q], d[order], atol=1e-5)


def test_nearest_neighbour_of_a_training_image_is_itself(digits):
    dist, idx = nearest_neighbours(digits.train_x[:20], digits.train_x, k=1, chunk=300)
    assert idx[:, 0].tolist() == list(range(20))
    assert dist.abs().max() < 1e-4


def test_penultimate_features_are_the_input_of_the_last_linear_layer(digits):
    torch.manual_seed(0)
    x = digits.test_x[:50]
    mlp = MLP(1, 8, 8, 10, hidden=[32, 16])
    expected = torch.relu(mlp.net[3](torch.relu(mlp.net[1](x.flatten(1)))))
    assert torch.allclose(penultimate_features(mlp, x, batch_size=16), expected, atol=1e-6)
    conv = SimpleConvNet(1, 8, 8, 10)
    assert torch.allclose(penultimate_features(conv, x), conv.convs(x).flatten(1), atol=1e-6)


def test_class_means_batch_has_known_likeness(digits):
    """A 'distilled' batch equal to the real class means: cosine to its own class mean is 1, that mean
    is the nearest one, and a nearest-class-mean classifier agrees with every label."""
    means = class_means(digits.train_x, digits.train_y, 10)
    images = means.view(10, 1, 8, 8)
    classes = torch.arange(10)
    net = nearest_class_mean_net(means)
    cos = cosine_to_class_means(images, means)
    assert torch.allclose(cos.diagonal(), torch.ones(10), atol=1e-5)
    assert agreement_rate(net, images, classes) == 1.0
    # half of the labels pointing at the wrong class: agreement is exactly one half
    wrong = torch.where(classes < 5, classes, (classes + 1) % 10)
    assert agreement_rate(net, images, wrong) == 0.5

    real = RealReference.build(digits.train_x, digits.train_y, 10, digits.mean.tolist(), digits.std.tolist(), net)
    stats = likeness(images, classes, real, net, k=3)
    summary = summarize_stats(stats)
    assert summary["class_mean_cosine_own"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert summary["class_mean_nearest_is_own"]["mean"] == 1.0
    assert summary["direct_agrees"] == {"mean": 1.0, "std": 0.0, "n": 10}
    assert (stats["class_mean_cosine_best_other"] < 1 - 1e-3).all()
    # this net's features are its input, so the feature neighbours are the normalized-space ones
    _, idx = nearest_neighbours(images, digits.train_x, k=3)
    assert torch.equal(stats["_feature_nn"], idx)


def test_held_out_real_batch_matches_the_classes(digits):
    classes = torch.tensor([3, 3, 0, 7, 3])
    x, y = held_out_real(digits.val_x, digits.val_y, classes, torch.Generator().manual_seed(0))
    assert y.tolist() == classes.tolist()
    assert len({tuple(v.flatten().tolist()) for v in x[[0, 1, 4]]}) == 3  # no repeats while the class has images


def test_symmetric_kl_against_the_definition():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    p, q = a.softmax(-1), b.softmax(-1)
    expected = (p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)
    assert torch.allclose(symmetric_kl(a, b), expected, atol=1e-6)
    assert symmetric_kl(a, a).abs().max() < 1e-7


def test_compare_models_on_constructed_cases(digits):
    torch.manual_seed(0)
    net = MLP(1, 8, 8, 10, hidden=[16])
    loop = InnerLoop(net, "mse")
    direct = {k: v.detach() for k, v in net.named_parameters()}
    x, y = digits.test_x[:200], digits.test_y[:200]
    direct_logits = loop.forward(direct, x)
    # three one-step "landings" equal to the direct model: no divergence, the ensemble is the direct model
    same = {k: v.unsqueeze(0).repeat(3, *[1] * v.dim()) for k, v in direct.items()}
    inits = InitSampler(net).sample(3, seed=0)
    c = compare_models(direct_logits, stack_logits(loop, same, x, batch_size=64), y, direct, same, inits, loop.names)
    assert c["param_distance"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert c["prediction_disagreement"]["mean"] == 0.0
    assert c["symmetric_kl"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert c["ensemble_acc"] == c["direct_acc"] == c["best_member_acc"]
    # real random models: distances and accuracies against a slow per-model computation
    other = InitSampler(net).sample(4, seed=1)
    logits = stack_logits(loop, other, x)
    c = compare_models(direct_logits, logits, y, direct, other, inits=other, names=loop.names)
    flat_direct = torch.cat([direct[k].flatten() for k in loop.names])
    dists = torch.tensor([(torch.cat([other[k][i].flatten() for k in loop.names]) - flat_direct).norm()
                          for i in range(4)])
    accs = torch.tensor([(loop.forward({k: v[i] for k, v in other.items()}, x).argmax(-1) == y).float().mean()
                         for i in range(4)])
    assert c["param_distance"]["mean"] == pytest.approx(dists.mean().item(), rel=1e-5)
    assert c["member_acc"]["mean"] == pytest.approx(accs.mean().item(), abs=1e-6)
    assert c["best_member_acc"] == pytest.approx(accs.max().item(), abs=1e-6)
    assert c["onestep_step_length"]["mean"] == 0.0
    ens = logits.softmax(-1).mean(0).argmax(-1)
    assert c["ensemble_acc"] == pytest.approx((ens == y).float().mean().item())
    cm = confusion_matrix(ens, y, 10)
    assert cm.sum() == len(y) and cm.trace() == (ens == y).sum()


# -- figures and the task on a tiny artifact ----------------------------------------------------------
def make_tiny_artifact(run_dir: Path, per_class: int = 2, seed: int = 0) -> Path:
    """A digits 'distillation run' without the distillation: random images, soft labels, a rate, and
    a briefly fitted direct minimum beside them (all in the real on-disk formats)."""
    dm = TensorDataModule("digits")
    dm.setup()
    g = torch.Generator().manual_seed(seed)
    n = 10 * per_class
    classes = torch.arange(10).repeat_interleave(per_class)
    images = dm.train_x[:n] + 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    labels = torch.nn.functional.one_hot(classes, 10).float() + 0.1 * torch.randn(n, 10, generator=g)
    arch = {"_target_": "distillscape.models.MLP", "_partial_": True, "hidden": [32]}
    meta = {"dataset": "digits", "num_classes": 10, "classes": dm.classes, "image_shape": [1, 8, 8],
            "normalization": dm.normalization(), "arch": arch,
            "inner": {"steps": 1, "loss": "mse", "lr_per_param": False, "init_mode": "random",
                      "init_scheme": "default", "param_names": ["net.1.weight", "net.1.bias", "net.3.weight",
                                                                "net.3.bias"]},
            "step": 0, "metrics": {"test/onestep_acc_mean": 0.5, "test/onestep_acc_std": 0.1,
                                   "test/onestep_inits": 4.0},
            "config": {"dataset": {"_target_": "distillscape.data.TensorDataModule", "name": "digits"}}}
    save_distilled(run_dir, Distilled(images, labels, torch.tensor([[0.3]]), meta))
    torch.manual_seed(seed)
    net = MLP(1, 8, 8, 10, hidden=[32])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):  # a few full-batch steps: a direct model that is better than chance
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(dm.train_x), dm.train_y).backward()
        opt.step()
    save_direct_minimum(run_dir, net, {"dataset": "digits", "arch": arch, "num_classes": 10,
                                       "image_shape": [1, 8, 8], "normalization": dm.normalization(),
                                       "metrics": {"direct/acc": 0.0, "direct/loss": 0.0}})
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_artifact(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def tiny_instances(tiny_run, tmp_path_factory) -> Path:
    from distillscape.tasks.instances import instances

    out = tmp_path_factory.mktemp("tiny_instances")
    instances(compose_cfg("instances", [f"distilled={tiny_run}", "instances.models=3", "instances.per_page=12",
                                   "instances.neighbours=3", "instances.test_limit=150"], out))
    return out


def test_instances_task_on_a_tiny_artifact(tiny_instances):
    res = read_json(tiny_instances / "instances.json")
    assert res["images"] == 20 and len(res["per_image"]) == 20
    assert res["figures"][:4] == ["distilled_p01.png", "distilled_p02.png", "neighbours_p01.png", "neighbours_p02.png"]
    for name in res["figures"]:
        assert (tiny_instances / name).stat().st_size > 5000, name
    assert set(res["likeness"]) == {"distilled", "random_real", "noise"}
    for kind in res["likeness"].values():
        assert kind["direct_agrees"]["n"] == 20
    # real held-out images of the right classes are recognized by the fitted direct model, noise is not
    assert res["likeness"]["random_real"]["direct_agrees"]["mean"] > 0.6
    assert res["likeness"]["random_real"]["pixel_nn_rms"]["mean"] < res["likeness"]["noise"]["pixel_nn_rms"]["mean"]
    comp = res["comparisons"]["random_inits"]
    assert comp["ensemble_members"] == 3 and comp["member_acc"]["n"] == 3
    assert res["test_examples"] == 150
    for cm in res["confusion_matrices"].values():
        assert sum(map(sum, cm)) in (150, 3 * 150)
    assert len(res["per_image"][0]["pixel_neighbours"]) == 3


def test_distilled_figure_pages_a_large_batch(tmp_path, digits):
    # 100 images are 5 pages of 20; 45 keep the test short and still end on a partial page
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(45, 1, 8, 8, generator=g), torch.randn(45, 10, generator=g)
    paths = distilled_pages(images, labels, torch.tensor([[0.1]]), digits.mean.tolist(), digits.std.tolist(),
                            "soft_ce", tmp_path, classes=digits.classes, per_page=20)
    assert [p.name for p in paths] == [f"distilled_p{i:02d}.png" for i in range(1, 4)]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_instances_task_errors_are_one_line(tmp_path, tiny_run, capsys):
    from distillscape.tasks.instances import main

    with pytest.raises(SystemExit) as e:
        main(compose_cfg("instances", [], tmp_path / "a"))
    assert e.value.code == 2 and "distilled=" in capsys.readouterr().err
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    for f in ("distilled.safetensors", "distilled.json"):
        (lonely / f).write_bytes((tiny_run / f).read_bytes())
    with pytest.raises(SystemExit) as e:
        main(compose_cfg("instances", [f"distilled={lonely}"], tmp_path / "b"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "instances.direct_minimum=" in err and len(err.strip().splitlines()) == 1
