"""Reinforcement-learning tasks: batched rollouts against one-env-at-a-time episodes, GAE and the PPO
surrogate against hand-written loops, the hypergradient through the inner step against finite
differences, a short cart-pole distillation, the distill job end to end, and one-line errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from distillscape.config import DistillConfig, DistillOptimConfig, EnvConfig, RLConfig
from distillscape.errors import ConfigError, DatasetNotFoundError
from distillscape.inner import InitSampler, InnerLoop
from distillscape.models import PolicyMLP
from distillscape.params import unstack
from distillscape.rl import (Collector, RLDistiller, VecEnv, episode_returns, episode_returns_one, gae, log_probs,
                             one_thread, ppo_surrogate, stack_forward)
from distillscape.tasks.distill import distill
from conftest import compose_cfg

CARTPOLE = EnvConfig()


def balancing_actor() -> PolicyMLP:
    """A hand-set policy that pushes the cart towards where the pole falls: long episodes (up to the
    500-step limit), so the batched path's truncation and autoreset are exercised too."""
    net = PolicyMLP(4, 2, hidden=[4, 4])
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.net[1].weight[0] = torch.tensor([0.0, 0.1, 1.0, 0.5])   # hidden 0 ~ angle + angular velocity
        net.net[3].weight[0, 0] = 1.0
        net.net[5].weight[:, 0] = torch.tensor([-5.0, 5.0])          # right when it leans right
    return net


def test_batched_returns_of_a_policy_stack_equal_one_episode_at_a_time():
    torch.manual_seed(0)
    good = balancing_actor()
    loop = InnerLoop(good)
    stack = InitSampler(good).sample(3, seed=1)
    stack = {k: torch.cat([dict(good.named_parameters())[k].detach().unsqueeze(0), v]) for k, v in stack.items()}
    seeds = [0, 5, 17, 123, 99999]
    batched = episode_returns(loop, stack, CARTPOLE, seeds)
    assert batched.shape == (4, 5)
    for m in range(4):
        net = PolicyMLP(4, 2, hidden=[4, 4])
        net.load_state_dict(unstack(stack, m))
        assert batched[m].tolist() == episode_returns_one(net, CARTPOLE, seeds), m
    assert batched[0].max() >= 200 and batched[1:].max() < 200   # the hand-set policy balances, random ones do not


def test_cartpole_start_states_are_gymnasiums_own():
    import gymnasium
    venv = VecEnv(CARTPOLE, 3)
    obs = venv.reset([3, 4, 5])
    one = gymnasium.make("CartPole-v1")
    for i, s in enumerate([3, 4, 5]):
        assert np.array_equal(obs[i], one.reset(seed=s)[0])


def test_forward_stack_equals_vmapped_forward():
    net = PolicyMLP(4, 3, hidden=[7, 5], activation="relu")
    loop = InnerLoop(net)
    stack = InitSampler(net).sample(4, seed=0)
    x = torch.randn(4, 9, 4)
    from torch.func import vmap
    torch.testing.assert_close(stack_forward(loop)(stack, x), vmap(loop.forward, in_dims=(0, 0))(stack, x))


def test_gae_equals_a_hand_written_loop():
    gen = torch.Generator().manual_seed(0)
    m, t, e = 2, 9, 3
    rewards, values, nxt = (torch.rand(m, t, e, generator=gen, dtype=torch.float64) for _ in range(3))
    term = torch.rand(m, t, e, generator=gen) < 0.15
    done = term | (torch.rand(m, t, e, generator=gen) < 0.1)
    gamma, lam = 0.97, 0.9
    got = gae(rewards, values, nxt, term, done, gamma, lam)
    for i in range(m):
        for j in range(e):
            a = 0.0
            for k in reversed(range(t)):
                nv = 0.0 if term[i, k, j] else nxt[i, k, j].item()
                delta = rewards[i, k, j].item() + gamma * nv - values[i, k, j].item()
                a = delta + (0.0 if done[i, k, j] else gamma * lam * a)
                assert math.isclose(got[i, k, j].item(), a, rel_tol=1e-12, abs_tol=1e-12)


def test_ppo_surrogate_equals_a_hand_computed_clipped_loss():
    gen = torch.Generator().manual_seed(1)
    new, old = torch.randn(2, 50, generator=gen) * 0.3, torch.randn(2, 50, generator=gen) * 0.3
    adv = torch.randn(2, 50, generator=gen)
    mask = torch.rand(2, 50, generator=gen) > 0.2
    got = ppo_surrogate(new, old, adv, 0.2, mask)
    for i in range(2):
        terms = []
        for n in range(50):
            if not mask[i, n]:
                continue
            r = math.exp(new[i, n].item() - old[i, n].item())
            a = adv[i, n].item()
            terms.append(min(r * a, min(max(r, 0.8), 1.2) * a))
        assert math.isclose(got[i].item(), -sum(terms) / len(terms), rel_tol=1e-5)
    # unclipped at ratio 1: the policy gradient's estimate, -mean(A)
    assert torch.allclose(ppo_surrogate(old, old, adv, 0.2), -adv.mean(-1))


def test_hypergradient_through_the_inner_step_agrees_with_finite_differences():
    """d(PPO surrogate of the one-step policies)/d(states, targets, log rates), by autograd through the
    vmapped inner step, against central differences (float64, a tiny policy, a fixed experience batch)."""
    torch.manual_seed(0)
    net = PolicyMLP(4, 2, hidden=[3]).double()
    loop = InnerLoop(net, "mse")
    inits = {k: v.double() for k, v in InitSampler(net).sample(2, seed=0).items()}
    gen = torch.Generator().manual_seed(2)
    obs = torch.randn(2, 12, 4, generator=gen, dtype=torch.float64)
    actions = torch.randint(2, (2, 12), generator=gen)
    old = torch.log(torch.full((2, 12), 0.5, dtype=torch.float64)) + 0.05 * torch.randn(2, 12, generator=gen, dtype=torch.float64)
    adv = torch.randn(2, 12, generator=gen, dtype=torch.float64)
    states = torch.randn(4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randn(4, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    log_lrs = torch.full((1, 4), math.log(0.3), dtype=torch.float64, requires_grad=True)

    def loss(s, y, ll):
        landed = loop.run_stack(inits, s, y, ll.exp())
        return ppo_surrogate(log_probs(loop, landed, obs, actions)[0], old, adv, 0.2).mean()

    grads = torch.autograd.grad(loss(states, targets, log_lrs), [states, targets, log_lrs])
    eps = 1e-6
    for which, g in enumerate(grads):
        for idx in [(0, 0), (1, 1), (3, 0)] if which < 2 else [(0, 0), (0, 3)]:
            args = [states.detach().clone(), targets.detach().clone(), log_lrs.detach().clone()]
            args[which][idx] += eps
            up = loss(*args).item()
            args[which][idx] -= 2 * eps
            down = loss(*args).item()
            fd = (up - down) / (2 * eps)
            assert math.isclose(g[idx].item(), fd, rel_tol=1e-4, abs_tol=1e-8), (which, idx, g[idx].item(), fd)


@one_thread()
def test_short_cartpole_distillation_lifts_one_step_return_far_above_random():
    torch.manual_seed(0)
    s = DistillConfig(images_per_class=8, lr_init=0.1, inits_per_step=8,
                      optim=DistillOptimConfig(lr_images=0.01, lr_labels=0.01, lr_lrs=0.01))
    rl = RLConfig(envs_per_init=8, horizon=128)
    d = RLDistiller(PolicyMLP(4, 2), PolicyMLP(4, 1), (4,), 2, s, rl)
    inits = d.sampler.sample(20, seed=77)

    def held_out() -> float:
        landed = {k: v.detach() for k, v in d.land(inits).items()}
        return episode_returns(d.loop, landed, CARTPOLE, list(range(3))).mean().item()

    before = held_out()
    collector = Collector(CARTPOLE, 8, 8, 0)
    opt = d.optimizer()
    for _ in range(50):
        d.outer_step(collector, opt)
    after = held_out()
    assert before < 30, before    # noise states, one small step: about a random policy (~20)
    assert after > 3 * before and after > 75, (before, after)
    assert not torch.allclose(d.lrs, torch.full_like(d.lrs, 0.1))


def test_distill_job_on_cartpole_writes_the_artifact_and_the_metric_names(tmp_path):
    cfg = compose_cfg("distill", ["experiment=cartpole", "logger=none", "distill.steps=6", "distill.val_every=3",
                                  "distill.val_inits=3", "distill.eval_inits=5", "rl.ppo.env_steps=2048",
                                  "rl.eval_episodes=2", "rl.baseline_lrs=[0.1,1.0]"], tmp_path)
    m = distill(cfg)
    for k in ("test/onestep_return_mean", "test/onestep_return_std", "direct/return_mean", "random_states/return_mean",
              "ppo_states/return_mean", "test/onestep_return_min", "test/onestep_return_max"):
        assert k in m and math.isfinite(m[k]), k
    assert m["test/onestep_inits"] == 5 and 8 <= m["test/onestep_return_mean"] <= 500
    assert "step" not in m  # where the test row is logged, not a result
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(m)
    meta = json.loads((tmp_path / "distilled.json").read_text())
    assert meta["kind"] == "rl" and meta["env"] == "cartpole" and meta["image_shape"] == [4]
    for f in ("distilled.safetensors", "direct_minimum.safetensors", "direct_critic.safetensors"):
        assert (tmp_path / f).exists(), f


def test_bad_rl_inputs_get_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="env"):
        compose_cfg("distill", ["env=pong"], tmp_path)
    with pytest.raises(ConfigError, match="env.name"):
        EnvConfig(name="pong")
    cfg = compose_cfg("distill", ["env=cartpole", "arch=simple_convnet", "logger=none"], tmp_path)
    with pytest.raises(ConfigError, match="arch=policy_mlp"):
        distill(cfg)
    with pytest.raises(DatasetNotFoundError, match="ale-py|ROM"):
        VecEnv(EnvConfig(name="centipede", game="no_such_game"), 1)


# -- RL cost surfaces ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    """A few-step cart-pole distillation run directory (distilled.*, direct_minimum.*, the critics)."""
    out = tmp_path_factory.mktemp("cartpole_run")
    distill(compose_cfg("distill", ["experiment=cartpole", "logger=none", "distill.steps=4", "distill.val_every=4",
                                    "distill.val_inits=2", "distill.eval_inits=3", "rl.ppo.env_steps=8192",
                                    "rl.eval_episodes=2", "rl.baseline_lrs=[0.3]"], out))
    return out


def run_landscape(run_dir, out, overrides):
    from distillscape.tasks.landscape import landscape
    return landscape(compose_cfg("landscape", [f"distilled={run_dir}", "logger=none", *overrides], out))


def test_rl_surfaces_match_point_by_point_episodes_and_losses(cartpole_run, tmp_path):
    from distillscape.config import settings
    from distillscape.landscape import read_npz
    from distillscape.params import unflatten
    from distillscape.rl import episode_seeds
    from distillscape.run import Run
    from distillscape.costs import rl_experience_cost
    from distillscape.run import RunPoints

    overrides = ["experiment=rl_surfaces_2x2", "sweep.costs=[episode_return,ppo_loss,distilled]",
                 "sweep.resolution=[3,3]", "landscape.episodes=3", "landscape.experience_steps=256"]
    (path,) = [p for p in run_landscape(cartpole_run, tmp_path, overrides) if p.parent.name == "minimum"]
    surface = read_npz(path)
    assert {"episode/return", "ppo/loss", "distilled/loss"} <= set(surface)
    # the slow path at every grid point: load the point into a net, one episode after another; the PPO loss by hand
    s = settings(compose_cfg("landscape", [f"distilled={cartpole_run}", *overrides], tmp_path))
    run = Run.open(cartpole_run)
    pts = RunPoints(run, s.landscape)
    cost = rl_experience_cost(s, run, pts, "minimum")
    from distillscape.artifacts import read_tensors
    t = read_tensors(path.parent / "directions.safetensors")
    a0, a1 = surface["axis0"], surface["axis1"]
    seeds = episode_seeds(s.landscape.episode_seed, s.landscape.episodes)
    for i in range(3):
        for j in range(3):
            vec = t["centre"] + a0[i] * t["directions"][0] + a1[j] * t["directions"][1]
            net = run.net()
            net.load_state_dict(unflatten(vec.float(), pts.swept))
            want = np.mean(episode_returns_one(net, CARTPOLE, seeds))
            assert surface["episode/return"][i, j] == want, (i, j)
            with torch.no_grad():
                logp = torch.log_softmax(net(cost.obs), -1).gather(-1, cost.actions.unsqueeze(-1)).squeeze(-1)
            r = torch.exp(logp - cost.logp_old)
            hand = -torch.minimum(r * cost.adv, r.clamp(0.8, 1.2) * cost.adv).mean().item()
            assert surface["ppo/loss"][i, j] == pytest.approx(hand, rel=1e-4, abs=1e-6)


def test_dataset_and_rl_runs_refuse_each_others_costs(cartpole_run, tmp_path):
    from conftest import REPO
    dataset_run = REPO / "tests" / "data" / "run_v0_1"
    with pytest.raises(ConfigError, match="are RL costs.*distillscape-distill experiment=cartpole"):
        run_landscape(dataset_run, tmp_path / "a", ["experiment=rl_surfaces_2x2"])
    with pytest.raises(ConfigError, match="measure a dataset.*RL task cartpole"):
        run_landscape(cartpole_run, tmp_path / "b", ["experiment=surfaces_2x2"])


def test_landing_analysis_of_an_rl_run(cartpole_run, tmp_path):
    from distillscape.params import unstack
    from distillscape.rl import episode_seeds
    from distillscape.run import Run
    from distillscape.seeds import seed_for
    from distillscape.tasks.landing import landing

    cfg = compose_cfg("landing", [f"distilled={cartpole_run}", "logger=none", "analysis.inits=3", "analysis.polish_inits=1",
                                  "analysis.polish_steps=16", "analysis.barrier_points=3"], tmp_path)
    summary = landing(cfg)
    st = summary["kinds"]["distilled"]
    assert summary["kind"] == "rl" and st["landing_return"]["n"] == 3 and st["polish_return_gained"]["n"] == 1
    assert st["barrier_return"]["min"] >= 0 and st["step_norm"]["min"] > 0
    # the landings' returns, one landing and one episode at a time
    run = Run.open(cartpole_run)
    landed = run.land(run.sampler().sample(3, seed=cfg.analysis.init_seed))
    seeds = episode_seeds(seed_for(cfg.analysis.seed, "analysis", "rl_episodes"), summary["episodes_per_policy"])
    slow = []
    for i in range(3):
        net = run.net()
        net.load_state_dict(unstack(landed, i))
        slow.append(np.mean(episode_returns_one(net, CARTPOLE, seeds)))
    assert st["landing_return"]["mean"] == pytest.approx(np.mean(slow), rel=1e-12)
    assert (tmp_path / "landing_stats.json").exists()


def test_centipede_runs_end_to_end_at_a_tiny_size(tmp_path):
    pytest.importorskip("ale_py")
    cfg = compose_cfg("distill", [
        "experiment=centipede", "logger=none", "arch.width=0.25", "env.max_episode_steps=12", "distill.steps=2",
        "distill.val_every=2", "distill.inits_per_step=2", "distill.val_inits=1", "distill.eval_inits=2",
        "rl.envs_per_init=2", "rl.horizon=6", "rl.epochs=1", "rl.eval_episodes=1", "rl.baseline_lrs=[0.01]",
        "rl.ppo.env_steps=64", "rl.ppo.envs=2", "rl.ppo.horizon=16", "rl.ppo.epochs=1", "rl.ppo.minibatches=2"], tmp_path)
    m = distill(cfg)
    for k in ("test/onestep_return_mean", "test/onestep_return_std", "direct/return_mean", "random_states/return_mean"):
        assert k in m and math.isfinite(m[k]), k
    meta = json.loads((tmp_path / "distilled.json").read_text())
    assert meta["env"] == "centipede" and meta["image_shape"] == [4, 84, 84] and meta["num_classes"] == 18


def test_orthogonal_init_scheme():
    """The RL actors' init: orthogonal weights (gain sqrt 2), the output layer's gain 0.01, zero biases."""
    from distillscape.models import init_parameters_
    torch.manual_seed(0)
    net = init_parameters_(PolicyMLP(4, 2, hidden=[16, 16]), "orthogonal")
    w1, w2, w3 = net.net[1].weight, net.net[3].weight, net.net[5].weight
    torch.testing.assert_close(w1.T @ w1, 2 * torch.eye(4), atol=1e-5, rtol=0)       # columns orthogonal (16 x 4)
    torch.testing.assert_close(w2 @ w2.T, 2 * torch.eye(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(w3 @ w3.T, 1e-4 * torch.eye(2), atol=1e-8, rtol=0)
    assert all(not b.any() for n, b in net.named_parameters() if n.endswith("bias"))
    other = init_parameters_(PolicyMLP(4, 2, hidden=[16, 16]), "orthogonal")
    assert not torch.equal(other.net[1].weight, w1)   # random draws, not a fixed init


def test_a_saved_ppo_minimum_is_reused_not_retrained(cartpole_run, tmp_path):
    from distillscape.artifacts import read_tensors
    first = json.loads((cartpole_run / "metrics.json").read_text())
    m = distill(compose_cfg("distill", ["experiment=cartpole", "logger=none", "distill.steps=2", "distill.val_every=2",
                                        "distill.val_inits=2", "distill.eval_inits=3", f"direct.checkpoint={cartpole_run}",
                                        "rl.eval_episodes=2", "rl.baseline_lrs=[0.3]"], tmp_path))
    assert m["direct/return_mean"] == first["direct/return_mean"] and m["ppo/env_steps"] == first["ppo/env_steps"]
    for f in ("direct_minimum.safetensors", "direct_critic.safetensors"):
        a, b = read_tensors(cartpole_run / f), read_tensors(tmp_path / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f


def test_rl_init_space_is_one_job_plane_and_line_init_to_landing(cartpole_run, tmp_path):
    """experiment=rl_init_space: the plane centred on the origin (first axis towards the landing) and the
    line init -> landing in one job; the line's returns equal one-net-one-episode rollouts of the points
    init + alpha (landing - init), and its ends are the init's and the landing's returns."""
    from distillscape.artifacts import read_tensors
    from distillscape.landscape import read_npz
    from distillscape.params import unflatten
    from distillscape.rl import episode_seeds
    from distillscape.run import Run
    from distillscape.run import RunPoints
    from distillscape.config import LandscapeConfig

    paths = run_landscape(cartpole_run, tmp_path, ["experiment=rl_init_space", "sweep.resolution=[3,3]",
                                                   "sweep.line_resolution=5", "landscape.episodes=2"])
    by_dir = {p.parent.name: p for p in paths}
    assert set(by_dir) == {"origin", "init_to_landing"}, paths
    plane = read_npz(by_dir["origin"])
    assert plane["episode/return"].shape == (3, 3) and str(plane["centre_name"]) == "origin"
    line = read_npz(by_dir["init_to_landing"])
    alphas = line["axis0"]
    assert line["episode/return"].shape == (5,) and alphas[0] == -0.5 and alphas[-1] == 1.5
    t = read_tensors(by_dir["init_to_landing"].parent / "directions.safetensors")
    run = Run.open(cartpole_run)
    pts = RunPoints(run, LandscapeConfig())
    init, landing = pts["init"], pts["landing"]
    torch.testing.assert_close(t["centre"], init)
    torch.testing.assert_close(t["directions"][0], landing - init)
    seeds = episode_seeds(0, 2)
    for i, a in enumerate(alphas):
        net = run.net()
        net.load_state_dict(unflatten((init + float(a) * (landing - init)).float(), pts.swept))
        assert line["episode/return"][i] == np.mean(episode_returns_one(net, CARTPOLE, seeds)), (i, a)
    names = [str(n) for n in line["marked_names"]]
    coords = dict(zip(names, line["marked_coords"][:, 0]))
    assert coords["init"] == pytest.approx(0, abs=1e-6) and coords["landing"] == pytest.approx(1, abs=1e-6)


def test_bad_sweep_lines_get_one_line_errors():
    from distillscape.config import SweepConfig
    with pytest.raises(ConfigError, match=r"sweep.lines=.*\[from, to\]"):
        SweepConfig(lines=[["init"]])
    with pytest.raises(ConfigError, match="sweep.line_range"):
        SweepConfig(line_range=[1.0, 0.0])
    with pytest.raises(ConfigError, match="sweep.line_resolution"):
        SweepConfig(line_resolution=1)


def test_es_step_equals_member_by_member_rollouts():
    """rl.estimator=es: the update of one ES step (all members' one-step policies batched in one vector env)
    equals the slow path: each member's batch built by hand, each init trained on it alone, each episode
    played in its own gymnasium env, centred ranks, the rank-weighted sum of the perturbations."""
    from distillscape.params import unstack
    torch.manual_seed(0)
    s = DistillConfig(images_per_class=2, inits_per_step=2, lr_init=0.5)
    rl = RLConfig(estimator="es", es_pairs=3, es_episodes=2, es_sigma=0.3)
    d = RLDistiller(PolicyMLP(4, 2, hidden=[8]), PolicyMLP(4, 1), (4,), 2, s, rl)
    learned = (d.states, d.log_lrs, d.targets)
    before = [p.detach().clone() for p in learned]
    opt = torch.optim.SGD(learned, lr=1.0)  # after = before - grad
    torch.manual_seed(1)
    with one_thread():
        d.es_step(CARTPOLE, opt)
    torch.manual_seed(1)  # the same draws, in es_step's order
    inits = d.sampler.sample(2)
    eps = [torch.randn(3, *p.shape) for p in before]
    seeds = torch.randint(0, 2**31 - 1, (2,)).tolist()
    fitness = []
    for j in range(6):
        sign, e = (1.0, j) if j < 3 else (-1.0, j - 3)
        x, ll, y = (b + sign * 0.3 * n[e] for b, n in zip(before, eps))
        returns = []
        for i in range(2):
            landed = d.loop.run(unstack(inits, i), x, y, ll.exp())
            net = PolicyMLP(4, 2, hidden=[8])
            net.load_state_dict({k: v.detach() for k, v in landed.items()})
            returns += episode_returns_one(net, CARTPOLE, seeds)
        fitness.append(np.mean(returns))
    order = sorted(range(6), key=lambda j: fitness[j])
    rank = {j: r / 5 - 0.5 for r, j in enumerate(order)}
    w = [rank[j] - rank[j + 3] for j in range(3)]
    for b, p, n in zip(before, learned, eps):
        g = -sum(w[j] * n[j] for j in range(3)) / (3 * 0.3)
        torch.testing.assert_close(p.detach(), b - g, rtol=1e-5, atol=1e-6)
    assert len(set(fitness)) > 1, fitness  # the members differed: the ranks were not all ties


def test_report_draws_a_job_with_a_plane_and_a_line(cartpole_run, tmp_path):
    """A landscape job of experiment=rl_init_space holds a plane and a line: the report draws both in its grid
    figure, and the plane (only) as an interactive 3-D surface."""
    from distillscape.tasks.report import report
    surfaces = tmp_path / "surfaces"
    run_landscape(cartpole_run, surfaces, ["experiment=rl_init_space", "sweep.resolution=[3,3]",
                                           "sweep.line_resolution=3", "landscape.episodes=1"])
    page = report(compose_cfg("report", [f"runs=[{cartpole_run},{surfaces}]"], tmp_path / "report"))
    assert page.exists() and list((tmp_path / "report" / "figures").glob("surfaces_*.png"))
    vtk = [p.name for p in (tmp_path / "report" / "vtk").glob("*.vtu")]
    assert vtk and all("_origin" in n for n in vtk), vtk  # the plane's; a line has no 3-D view
    # figure titles name the environment of an RL run, not the (unused) default dataset of its config
    text = page.read_text()
    assert "cartpole / PolicyMLP" in text
    assert "digits / PolicyMLP" not in text


def test_report_draws_return_surfaces(cartpole_run, tmp_path):
    """experiment=rl_return_surfaces holds only `episode/return` (no loss, no accuracy): the report draws it
    as a cost in the centres x costs grid and in 3-D (it failed with a grid of 0 columns)."""
    from distillscape.tasks.report import report
    surfaces = tmp_path / "returns"
    run_landscape(cartpole_run, surfaces, ["experiment=rl_return_surfaces", "sweep.resolution=[3,3]",
                                           "landscape.episodes=1"])
    page = report(compose_cfg("report", [f"runs=[{cartpole_run},{surfaces}]"], tmp_path / "report"))
    grids = list((tmp_path / "report" / "figures").glob("surfaces_*.png"))
    assert len(grids) == 1 and grids[0].stat().st_size > 5000, grids
    vtk = sorted(p.name for p in (tmp_path / "report" / "vtk").glob("*.vtu"))
    assert {"surfaces_01_returns_minimum.vtu", "surfaces_01_returns_landing.vtu"} <= set(vtk), vtk
    assert "episode/return" in page.read_text()
    # the headline table and its sentence speak of returns, computed from the run's metrics
    text = page.read_text()
    assert "episode return" in text and "test accuracy" not in text.split('id="landing"')[0].split('id="generalise"')[1]
    import json as _json
    m = _json.loads((cartpole_run / "metrics.json").read_text())
    assert f"reaches a mean episode return of {m['test/onestep_return_mean']:.1f}" in text
