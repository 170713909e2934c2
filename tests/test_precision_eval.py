"""bf16 for the many-model evaluations besides the cost surfaces: the held-out inits' test evaluation of a
distillation (distill.eval.precision) and the landing statistics on the true task (analysis.precision). The
bf16 forward equals a bfloat16 copy of each model; the results stay within tolerance of fp32 on digits/mlp;
each certificate's numbers are the differences from an fp32 computation made apart from it, and a forced tiny
tolerance fails and names the fp32 command."""
from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import compose_cfg
from distillscape.artifacts import read_json
from distillscape.config import ConfigError, validate
from distillscape.data import TensorDataModule
from distillscape.distill import DistillModule
from distillscape.inner import InitSampler, InnerLoop, evaluate_stack
from distillscape.job import Job
from distillscape.models import MLP, SimpleConvNet
from distillscape.params import unstack
from distillscape.stats import precision_difference, precision_summary
from distillscape.tasks.common import build_trainer
from test_landing import compose_landing

TOLERANCE = 1e-2  # the defaults of distill.eval.precision_tolerance and analysis.precision_tolerance


@pytest.fixture(scope="module")
def digits():
    dm = TensorDataModule("digits", val_size=200)
    dm.setup()
    return dm


def bf16_copy(net, params, x, y) -> tuple[float, float]:
    """The obvious way: a bfloat16 copy of the model with these weights, bfloat16 inputs, the loss of its
    logits taken in float32: (accuracy, mean loss)."""
    model = copy.deepcopy(net)
    model.load_state_dict(params)
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        logits = model(x.to(torch.bfloat16)).float()
    return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


@pytest.mark.parametrize("make,path", [(lambda: MLP(1, 8, 8, 10), "vmap"),
                                       (lambda: SimpleConvNet(1, 8, 8, 10), "vmap"),
                                       (lambda: SimpleConvNet(1, 8, 8, 10), "channels_last")])
def test_bf16_evaluation_equals_a_bfloat16_copy_of_each_model(digits, make, path):
    net = make()
    loop = InnerLoop(net, eval_path=path)
    stack = InitSampler(net).sample(4, seed=3)
    x, y = digits.test_x, digits.test_y
    acc, loss = evaluate_stack(loop, stack, x, y, batch_size=len(y), precision="bf16")
    acc32, loss32 = evaluate_stack(loop, stack, x, y, batch_size=len(y))
    for i in range(4):
        a, l = bf16_copy(net, unstack(stack, i), x, y)
        assert acc[i].item() == pytest.approx(a, abs=2 / len(y))  # an argmax tie may fall either way
        assert loss[i].item() == pytest.approx(l, rel=2e-3)
    assert not torch.equal(loss, loss32)  # bf16 indeed, and close to fp32
    torch.testing.assert_close(loss, loss32, rtol=TOLERANCE, atol=0)
    assert (acc - acc32).abs().max() <= TOLERANCE


def test_precision_difference_against_a_hand_computed_answer():
    got = precision_difference([1.0, 2.2, 2.9], [1.0, 2.0, 3.0], relative=True, tolerance=0.05)
    assert got["max_difference"] == pytest.approx(0.1) and not got["passed"] and got["rank_correlation"] == pytest.approx(1.0)
    acc = precision_difference([0.5, 0.52], [0.51, 0.5], relative=False, tolerance=0.05)
    assert acc["max_difference"] == pytest.approx(0.02) and acc["passed"] and acc["rank_correlation"] == pytest.approx(-1.0)
    # a diverged model must diverge in both precisions
    assert not precision_difference([1.0, np.inf], [1.0, 2.0], True, 1.0)["passed"]
    assert precision_difference([1.0, np.inf], [1.0, np.inf], True, 1.0)["passed"]
    s = precision_summary("bf16", 0.05, {"a": got, "b": acc}, inits=3)
    assert s["max_difference"] == pytest.approx(0.1) and not s["passed"] and s["inits"] == 3


def eval_module(digits, tmp_path, overrides):
    cfg = compose_cfg("distill", ["arch=mlp", "distill.eval_inits=12", "logger=none", *overrides], tmp_path)
    torch.manual_seed(0)  # the same noise batch in every module
    module = DistillModule(MLP(1, 8, 8, 10, hidden=[32]), 10, (1, 8, 8), OmegaConf.to_container(cfg.distill))
    trainer = build_trainer(Job.of(cfg), logger=False, enable_checkpointing=False, enable_progress_bar=False)
    (metrics,) = trainer.test(module, digits, verbose=False)
    return module, metrics


def test_distill_eval_in_bf16_is_within_tolerance_of_fp32_and_certified(digits, tmp_path):
    _, exact = eval_module(digits, tmp_path / "fp32", [])
    module, low = eval_module(digits, tmp_path / "bf16", ["distill.eval.precision=bf16", "distill.eval.precision_inits=5"])
    assert "test/precision_passed" not in exact
    assert low["test/onestep_acc_mean"] == pytest.approx(exact["test/onestep_acc_mean"], abs=TOLERANCE)
    assert low["test/onestep_loss"] == pytest.approx(exact["test/onestep_loss"], rel=TOLERANCE)
    assert low["test/onestep_loss"] != exact["test/onestep_loss"]
    cert = module.precision_certificates["test"]
    assert cert["passed"] and low["test/precision_passed"] == 1.0 and cert["inits"] == 5
    # the oracle: the first 5 landings evaluated apart, in both precisions, on the whole test split at once
    with torch.enable_grad():
        landed = module.loop.run_stack(module.eval_inits("test")["onestep"], module.images.detach(),
                                       module.labels.detach(), module.lrs.detach())
    first = {k: v[:5].detach() for k, v in landed.items()}
    x, y = digits.test_x, digits.test_y
    (acc16, loss16), (acc32, loss32) = (evaluate_stack(module.loop, first, x, y, len(y), precision=p) for p in ("bf16", "fp32"))
    assert cert["entries"]["onestep_loss"]["max_difference"] == pytest.approx(
        ((loss16 - loss32).abs() / loss32).max().item(), rel=1e-2)
    assert cert["entries"]["onestep_acc"]["max_difference"] == pytest.approx((acc16 - acc32).abs().max().item(), abs=1e-6)
    # a tolerance below the measured difference fails
    _, strict = eval_module(digits, tmp_path / "strict", ["distill.eval.precision=bf16", "distill.eval.precision_tolerance=1e-9"])
    assert strict["test/precision_passed"] == 0.0 and strict["test/precision_max_difference"] > 1e-9


SMALL = ["analysis.kinds=[distilled]", "analysis.inits=6", "analysis.polish_inits=0", "analysis.curvature_inits=0",
         "analysis.trajectory_inits=0", "analysis.power_iters=2", "analysis.hutchinson_probes=1",
         "analysis.curvature_examples=50", "analysis.train_examples=400", "analysis.test_examples=200", "analysis.barrier_points=2", "logger=none"]


def rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_landing_in_bf16_is_within_tolerance_of_fp32_and_a_tiny_tolerance_names_the_fp32_command(
        digits_run, tmp_path, capsys):
    from distillscape.tasks.landing import landing

    landing(compose_landing([f"distilled={digits_run}", *SMALL], tmp_path / "fp32"))
    exact = read_json(tmp_path / "fp32" / "landing_stats.json")
    assert "precision" not in exact
    capsys.readouterr()
    out = tmp_path / "bf16"
    landing(compose_landing([f"distilled={digits_run}", *SMALL, "analysis.precision=bf16", "analysis.eval_path=channels_last",
                             "analysis.precision_inits=4", "analysis.precision_tolerance=1e-9"], out))
    printed = capsys.readouterr().out
    low = read_json(out / "landing_stats.json")
    # the pinned evaluation path was taken and is on record (the rule's, for an mlp on 8x8 digits, is vmap)
    assert low["computed_with"]["eval_path"] == "channels_last" and exact["computed_with"]["eval_path"] == "vmap"
    for stat in ("landing_train_loss", "landing_test_loss", "init_test_loss"):
        assert low["kinds"]["distilled"][stat]["mean"] == pytest.approx(exact["kinds"]["distilled"][stat]["mean"], rel=TOLERANCE)
    for stat in ("landing_train_acc", "landing_test_acc"):
        assert low["kinds"]["distilled"][stat]["mean"] == pytest.approx(exact["kinds"]["distilled"][stat]["mean"], abs=TOLERANCE)
    # the certificate's differences are those of the bf16 run's rows from the fp32 run's, on its first 4 landings
    record = low["precision"]
    cert = record["kinds"]["distilled"]
    assert cert["inits"] == 4 and set(cert["entries"]) == {f"{w}_{s}_{m}" for w in ("init", "landing")
                                                           for s in ("train", "test") for m in ("loss", "acc")}
    r16, r32 = rows(out / "landing_stats.csv")[:4], rows(tmp_path / "fp32" / "landing_stats.csv")[:4]
    for name, entry in cert["entries"].items():
        a, e = (np.array([float(r[name]) for r in rs]) for rs in (r16, r32))
        diff = np.abs(a - e) / (np.abs(e) if name.endswith("loss") else 1.0)
        assert entry["max_difference"] == pytest.approx(diff.max(), abs=1e-5), name  # fp32's own rounding: ~1e-7
        assert entry["max_difference"] <= TOLERANCE, name
    assert cert["max_difference"] > 0  # bf16 indeed
    # the tolerance of 1e-9 is below it: failed, said so, and the fp32 command named
    assert not record["passed"] and record["fp32_command"].endswith("analysis.precision=fp32")
    assert "FAILED" in printed and "analysis.precision=fp32" in printed


@pytest.mark.parametrize("override,message", [("analysis.precision=fp16", "analysis.precision='fp16' is not allowed"),
                                              ("analysis.precision_tolerance=0", "must be a positive number")])
def test_bad_precision_settings_are_refused_in_one_line(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        validate(compose_landing([override], tmp_path))
    with pytest.raises(ConfigError, match=message.replace("analysis", "distill.eval")):
        validate(compose_cfg("distill", [override.replace("analysis", "distill.eval")], tmp_path))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_conv_relu_gives_the_bits_of_conv_then_relu_and_restores_the_net(digits, dtype):
    from distillscape.models import features_channels_last, fused_conv_relu

    torch.manual_seed(0)
    net = SimpleConvNet(1, 8, 8, 10).to(dtype)
    x = digits.test_x[:300].to(dtype)
    params = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in net.named_parameters()}
    with torch.no_grad(), features_channels_last(net):
        plain = torch.func.functional_call(net, params, (x,))
        with fused_conv_relu(net):
            assert [type(m).__name__ for m in net.convs] == ["Conv2d", "Identity", "Conv2d", "Identity"]
            fused = torch.func.functional_call(net, params, (x,))
    assert torch.equal(plain, fused)
    assert [type(m).__name__ for m in net.convs] == ["Conv2d", "ReLU", "Conv2d", "ReLU"]
    assert "forward" not in vars(net.convs[0])
    with torch.no_grad():  # off: nothing swapped
        with fused_conv_relu(net, on=False):
            assert type(net.convs[1]).__name__ == "ReLU"


def test_bf16_takes_the_channels_last_path_at_512_images_by_rule():
    from distillscape.landscape import batching_rule

    net = SimpleConvNet(1, 28, 28, 10)
    big = 300 << 10  # simple_convnet on MNIST: 294 KiB of layer outputs per image
    assert batching_rule(net, big, "cpu", 4096) == ("channels_last", 128)
    assert batching_rule(net, big, "cpu", 4096, "bf16") == ("channels_last", 512)
    assert batching_rule(net, big, "cpu", 300, "bf16") == ("channels_last", 300)  # never more than data_batch
    assert batching_rule(net, big, "cuda", 4096, "bf16") == ("vmap", 4096)


def test_a_pinned_evaluation_path_is_used_and_recorded(digits, tmp_path):
    """distill.eval.path pins how the held-out models run (auto: inner.eval_path_rule, vmap for an mlp on
    digits); the run records the path it took, and both paths compute the same function."""
    auto, by_rule = eval_module(digits, tmp_path / "auto", [])
    pinned, by_pin = eval_module(digits, tmp_path / "pinned", ["distill.eval.path=channels_last"])
    x = digits.test_x[:2]
    assert auto.loop.eval_path_for(x) == "vmap" and auto.computed_with("cpu")["eval_path"] == "vmap"
    assert pinned.loop.eval_path_for(x) == "channels_last" and pinned.computed_with("cpu")["eval_path"] == "channels_last"
    assert by_pin["test/onestep_loss"] == pytest.approx(by_rule["test/onestep_loss"], rel=1e-5)
    assert by_pin["test/onestep_acc_mean"] == pytest.approx(by_rule["test/onestep_acc_mean"], abs=1e-6)
    with pytest.raises(ConfigError, match="distill.eval.path='fast' is not allowed"):
        validate(compose_cfg("distill", ["distill.eval.path=fast"], tmp_path))


def test_an_rl_distillation_refuses_bf16_evaluation_in_one_line(tmp_path):
    from distillscape.tasks.distill import check

    with pytest.raises(ConfigError, match="an RL run is evaluated by its episodes in fp32"):
        check(Job.of(compose_cfg("distill", ["env=cartpole", "arch=policy_mlp", "distill.eval.precision=bf16"], tmp_path)))
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_distillation_with_a_failed_certificate_says_so_and_names_the_fp32_command(tmp_path, capsys):
    from distillscape.tasks.distill import distill

    metrics = distill(compose_cfg("distill", ["dataset=digits", "arch=mlp", "distill.steps=2", "distill.val_every=2",
                                              "distill.val_inits=2", "distill.eval_inits=4", "direct.epochs=1",
                                              "baseline.tune_inits=1", "baseline.lr_grid=[0.1]", "logger=none",
                                              "distill.eval.precision=bf16", "distill.eval.precision_tolerance=1e-9"],
                                  tmp_path))
    printed = capsys.readouterr().out
    record = read_json(tmp_path / "distilled.json")["precision"]
    assert not record["passed"] and record["inits"] == 4 and record["tolerance"] == 1e-9
    assert set(record["entries"]) == {"onestep_acc", "onestep_loss"}
    assert record["fp32_command"].endswith("distill.eval.precision=fp32")
    assert metrics["test/precision_passed"] == 0.0 == read_json(tmp_path / "metrics.json")["test/precision_passed"]
    assert "FAILED" in printed and "distill.eval.precision=fp32" in printed
