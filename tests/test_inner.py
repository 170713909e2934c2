"""Oracle tests of the inner loop: the functional step against torch.optim.SGD on a real nn.Module,
and hypergradients against finite differences."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from distillscape.inner import InitSampler, InnerLoop, inner_loss, unstack
from distillscape.models import MLP, ConvNet, LeNet, SimpleConvNet

ARCHS = [(MLP, {}), (LeNet, {}), (SimpleConvNet, {}), (ConvNet, {"width_channels": 8, "depth": 2})]


def sgd_oracle(net, x, targets, lrs, loss_kind):
    """The obviously-correct inner loop: a real module, real SGD, per-parameter-tensor rates as param groups."""
    net = copy.deepcopy(net)
    params = list(net.parameters())
    for t in range(lrs.shape[0]):
        groups = ([{"params": params, "lr": float(lrs[t, 0])}] if lrs.shape[1] == 1 else
                  [{"params": [p], "lr": float(lrs[t, i])} for i, p in enumerate(params)])
        opt = torch.optim.SGD(groups, lr=0.0)
        opt.zero_grad()
        inner_loss(net(x), targets, loss_kind).backward()
        opt.step()
    return dict(net.named_parameters())


@pytest.mark.parametrize("arch,kwargs", ARCHS, ids=[a.__name__ for a, _ in ARCHS])
@pytest.mark.parametrize("loss_kind", ["mse", "soft_ce"])
def test_functional_step_equals_sgd(arch, kwargs, loss_kind):
    torch.manual_seed(0)
    net = arch(1, 12, 12, 10, **kwargs)
    x, targets = torch.randn(10, 1, 12, 12), torch.randn(10, 10)
    loop = InnerLoop(net, loss_kind)
    n_tensors = len(loop.names)
    for lrs in (torch.tensor([[0.05]]), torch.tensor([[0.05], [0.02]]),
                torch.rand(2, n_tensors) * 0.1):  # one rate; two steps; one rate per tensor and step
        expected = sgd_oracle(net, x, targets, lrs, loss_kind)
        start = {k: v.detach().clone() for k, v in net.named_parameters()}
        for got in (loop.run(start, x, targets, lrs), loop.run_autograd(
                {k: v.clone().requires_grad_() for k, v in start.items()}, x, targets, lrs)):
            for k in loop.names:
                torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-6)


def test_stack_equals_one_at_a_time():
    torch.manual_seed(0)
    net = SimpleConvNet(1, 8, 8, 10)
    loop, sampler = InnerLoop(net, "mse"), InitSampler(net)
    inits = sampler.sample(3, seed=7)
    x, targets, lrs = torch.randn(10, 1, 8, 8), torch.eye(10), torch.tensor([[0.1]])
    stacked = loop.run_stack(inits, x, targets, lrs)
    for i in range(3):
        single = loop.run(unstack(inits, i), x, targets, lrs)
        for k in loop.names:
            torch.testing.assert_close(stacked[k][i], single[k], rtol=1e-5, atol=1e-6)


def test_init_sampler_is_seeded_and_fresh():
    net = MLP(1, 8, 8, 10)
    s = InitSampler(net)
    a, b = s.sample(2, seed=3), s.sample(2, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["net.1.weight"][0], a["net.1.weight"][1])
    torch.manual_seed(0)
    c = s.sample(1)
    d = s.sample(1)  # unseeded draws advance the global RNG: every training step gets new inits
    assert not torch.equal(c["net.1.weight"], d["net.1.weight"])


def outer_objective(loop, inits, x_syn, targets, lrs, x_real, y_real):
    landed = loop.run_stack(inits, x_syn, targets, lrs)
    logits = loop.forward_stack(landed, x_real)
    return F.cross_entropy(logits.flatten(0, 1), y_real.repeat(logits.shape[0]))


@pytest.mark.parametrize("loss_kind", ["mse", "soft_ce"])
def test_hypergradients_match_finite_differences(loss_kind):
    """d(outer loss)/d(images, labels, lr) through one (and two) inner steps, against central differences."""
    torch.manual_seed(0)
    net = MLP(1, 4, 4, 3, hidden=[5]).double()
    loop = InnerLoop(net, loss_kind)
    inits = {k: v.double() for k, v in InitSampler(net).sample(2, seed=1).items()}
    x_syn = torch.randn(3, 1, 4, 4, dtype=torch.double, requires_grad=True)
    targets = torch.randn(3, 3, dtype=torch.double, requires_grad=True)
    lrs = torch.tensor([[0.3], [0.2]], dtype=torch.double, requires_grad=True)
    x_real, y_real = torch.randn(7, 1, 4, 4, dtype=torch.double), torch.randint(0, 3, (7,))

    def f():
        return outer_objective(loop, inits, x_syn, targets, lrs, x_real, y_real)

    grads = torch.autograd.grad(f(), [x_syn, targets, lrs])
    eps = 1e-6
    with torch.no_grad():
        for tensor, g in zip((x_syn, targets, lrs), grads):
            flat, gflat = tensor.view(-1), g.reshape(-1)
            for i in torch.randperm(flat.numel())[:6].tolist():
                old = flat[i].item()
                flat[i] = old + eps
                with torch.enable_grad():
                    up = f().item()
                flat[i] = old - eps
                with torch.enable_grad():
                    down = f().item()
                flat[i] = old
                fd = (up - down) / (2 * eps)
                assert abs(fd - gflat[i].item()) <= 1e-6 + 1e-4 * abs(fd), (tensor.shape, i, fd, gflat[i].item())


def test_vmap_and_loop_hypergradients_agree():
    """The two outer-step paths DistillModule chooses between give the same gradients."""
    from distillscape.distill import DistillModule
    from omegaconf import OmegaConf

    from conftest import compose_cfg

    cfg = compose_cfg("distill", ["arch=simple_convnet", "distill.inits_per_step=3"], output_dir="/tmp/unused")
    torch.manual_seed(0)
    net = SimpleConvNet(1, 8, 8, 10)
    module = DistillModule(net, 10, (1, 8, 8), OmegaConf.to_container(cfg.distill))
    inits = module.sampler.sample(3, seed=0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    results = []
    for path in ("vmap", "loop"):
        module.zero_grad(set_to_none=True)
        loss, _ = module.outer_loss(inits, x, y, path)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in (module.images, module.labels, module.log_lrs)]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_evaluation_chunks_models_by_activation_memory_with_identical_results():
    """100 conv nets on 1000 MNIST-sized images would need ~30 GB at once: evaluation vmaps a chunk of
    models sized by their measured activations, and chunking does not change a single number."""
    from distillscape.inner import evaluate_stack

    net = SimpleConvNet(1, 28, 28, 10)
    loop = InnerLoop(net, eval_path="vmap")
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    per_example = (16 + 16 + 32 + 32) * 28 * 28 * 4 + 10 * 4   # conv, relu, conv, relu, linear outputs, fp32
    assert loop.activation_bytes(x) == per_example
    assert loop.eval_chunk(torch.zeros(1000, 1, 28, 28), 2 << 30) == (2 << 30) // (per_example * 1000)
    # on a CPU the chunk's activations stay in cache (8 MiB): here one model at a time, never none
    assert loop.eval_chunk(torch.zeros(1000, 1, 28, 28)) == max(1, (8 << 20) // (per_example * 1000)) == 1
    mlp = InnerLoop(MLP(1, 8, 8, 10))
    digits = torch.zeros(359, 1, 8, 8)
    assert mlp.eval_chunk(digits) == (8 << 20) // (mlp.activation_bytes(digits) * 359) > 1
    stack = InitSampler(net).sample(5, seed=0)
    auto = evaluate_stack(loop, stack, x, y, batch_size=32)
    for chunk in (1, 2, 5):
        fixed = evaluate_stack(loop, stack, x, y, batch_size=32, chunk_size=chunk)
        assert torch.equal(auto[0], fixed[0]) and torch.allclose(auto[1], fixed[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [lambda: SimpleConvNet(1, 28, 28, 10), lambda: MLP(1, 8, 8, 10)])
def test_evaluation_paths_agree_and_auto_takes_the_rules_path(make):
    """One model at a time with channels-last conv weights (in pieces of 128 examples) computes what the
    vmapped path computes, up to rounding; auto takes the path of the fixed rule (on a CPU: channels-last
    for nets with conv weights and large layer outputs, vmap for the others), bit for bit, whatever the
    machine's load."""
    from distillscape.inner import eval_path_rule, evaluate_stack

    net = make()
    shape = (1, 28, 28) if isinstance(net, SimpleConvNet) else (1, 8, 8)
    x, y = torch.randn(300, *shape), torch.randint(0, 10, (300,))
    stack = InitSampler(net).sample(6, seed=1)
    by_path = {p: evaluate_stack(InnerLoop(net, eval_path=p), stack, x, y, batch_size=200) for p in ("vmap", "channels_last")}
    assert torch.equal(by_path["vmap"][0], by_path["channels_last"][0])
    torch.testing.assert_close(by_path["vmap"][1], by_path["channels_last"][1], rtol=1e-5, atol=1e-6)
    auto = InnerLoop(net)
    expected = "channels_last" if isinstance(net, SimpleConvNet) else "vmap"  # 294 KiB of outputs per example; 4 KiB
    assert auto.eval_path_for(x) == eval_path_rule(net, auto.activation_bytes(x), "cpu") == expected
    assert eval_path_rule(net, auto.activation_bytes(x), "cuda") == "vmap"
    assert eval_path_rule(SimpleConvNet(1, 8, 8, 10), 24616, "cpu") == "vmap"  # small conv nets: vmap on a CPU too
    got = evaluate_stack(auto, stack, x, y, batch_size=200)
    assert torch.equal(got[0], by_path[expected][0]) and torch.equal(got[1], by_path[expected][1])
    assert not getattr(net, "channels_last", False)  # the switch is restored
