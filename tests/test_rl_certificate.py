"""The RL PPO loss on one fixed reference experience set (distillscape.rl_objective): its surface against
the loss computed by hand from that experience, against the centres' own-experience surface; and the
curvature certificate of RL landings on it, against the explicit Hessian of a tiny policy
(torch.func.hessian + torch.linalg.eigvalsh) and end to end in the landing task on cart-pole."""
from __future__ import annotations

import json

import pytest
import torch

from distillscape.curvature import certify
from distillscape.inner import InitSampler, InnerLoop
from distillscape.models import PolicyMLP
from distillscape.params import flatten, unflatten, unstack
from distillscape.rl_objective import ExperienceSet, ppo_objective

from test_rl import cartpole_run, run_landscape  # noqa: F401  (the few-step cart-pole distillation run)

CLIP = 0.2


def hand_ppo_loss(net, obs, actions, logp_old, adv, clip=CLIP) -> torch.Tensor:
    """-mean(min(r A, clip(r, 1 - clip, 1 + clip) A)), r = pi(a|s) / pi_old(a|s), written out."""
    logp = torch.log_softmax(net(obs), -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    r = torch.exp(logp - logp_old)
    return -torch.minimum(r * adv, r.clamp(1 - clip, 1 + clip) * adv).mean()


def loaded(run, vec, like):
    net = run.net()
    net.load_state_dict(unflatten(vec.float(), like))
    return net


# -- the surface on reference experience ---------------------------------------------------------------------
def test_reference_experience_surface_against_the_hand_loss_and_the_own_experience_surface(cartpole_run, tmp_path):
    from distillscape.artifacts import read_tensors
    from distillscape.config import settings
    from distillscape.landscape import read_npz
    from distillscape.run import Run
    from distillscape.costs import rl_experience_cost
    from distillscape.run import RunPoints
    from conftest import compose_cfg

    overrides = ["experiment=rl_surfaces_2x2", "sweep.costs=[ppo_loss,ppo_loss_reference]", "sweep.resolution=[3,3]",
                 "landscape.experience_steps=256"]
    paths = {p.parent.name: p for p in run_landscape(cartpole_run, tmp_path, overrides)}
    assert set(paths) == {"minimum", "landing"}
    s = settings(compose_cfg("landscape", [f"distilled={cartpole_run}", *overrides], tmp_path))
    run = Run.open(cartpole_run)
    pts = RunPoints(run, s.landscape)
    ref = rl_experience_cost(s, run, pts, "landing", "reference")
    # the reference experience is the PPO minimum's: its log-probabilities are that policy's own
    minimum = loaded(run, pts["minimum"], pts.swept)
    with torch.no_grad():
        logp = torch.log_softmax(minimum(ref.obs), -1).gather(-1, ref.actions.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp, ref.logp_old, rtol=1e-5, atol=1e-6)
    hand_at = {}
    for centre, path in paths.items():
        surface = read_npz(path)
        said = json.loads(str(surface["experience"]))
        assert said["ppo/loss"].startswith("own:") and said["ppo_reference/loss"].startswith("reference:")
        own = rl_experience_cost(s, run, pts, centre)  # this centre's own experience, the record its size
        assert said["ppo/loss"] == own.experience and f" {len(own.actions)} samples" in said["ppo/loss"]
        t = read_tensors(path.parent / "directions.safetensors")
        for i, a0 in enumerate(surface["axis0"]):
            for j, a1 in enumerate(surface["axis1"]):
                net = loaded(run, t["centre"] + a0 * t["directions"][0] + a1 * t["directions"][1], pts.swept)
                with torch.no_grad():
                    hand = hand_ppo_loss(net, ref.obs, ref.actions, ref.logp_old, ref.adv).item()
                assert surface["ppo_reference/loss"][i, j] == pytest.approx(hand, rel=1e-4, abs=1e-6), (centre, i, j)
        hand_at[centre] = surface["ppo_reference/loss"][1, 1]
        own_at_centre = surface["ppo/loss"][1, 1]
        # own experience: every ratio is 1 at the centre, the loss is minus the mean normalised advantage
        assert own_at_centre == pytest.approx(-own.adv.mean().item(), abs=1e-6)
        if centre == "minimum":  # the reference policy is this centre: the two surfaces are one
            assert (surface["ppo/loss"] == surface["ppo_reference/loss"]).all()
    # at another centre, the shared experience gives that centre's policy a loss far from the own-experience ~0
    own_landing = read_npz(paths["landing"])["ppo/loss"][1, 1]
    assert abs(hand_at["landing"]) > 10 * abs(own_landing) + 1e-3
    assert abs(hand_at["landing"] - hand_at["minimum"]) > 1e-3


# -- the certificate on the PPO loss -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_policy():
    """A 23-parameter tanh policy, 2 random points and 40 samples of fixed experience whose old
    log-probabilities put some ratios inside the clip range and some outside, on both sides."""
    net = PolicyMLP(4, 2, hidden=[3])
    loop = InnerLoop(net)
    stack = InitSampler(net).sample(2, seed=5)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(40, 4, generator=gen)
    actions = torch.randint(0, 2, (40,), generator=gen)
    with torch.no_grad():
        logp_first = torch.log_softmax(loop.forward(unstack(stack, 0), obs), -1).gather(-1, actions[:, None]).squeeze(-1)
    logp_old = logp_first + 0.3 * torch.randn(40, generator=gen)  # ratios e^{-+0.3...}: some clipped
    adv = torch.randn(40, generator=gen)
    exp = ExperienceSet(obs, actions, logp_old, adv, CLIP, "reference", "minimum")
    hessians = []
    for i in range(2):
        params = unstack(stack, i)
        vec = flatten(params, loop.names).detach()

        def ppo(v, like=params):
            logits = torch.func.functional_call(net, unflatten(v, like), (obs,))
            logp = torch.log_softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)
            r = torch.exp(logp - logp_old)
            return -torch.minimum(r * adv, r.clamp(1 - CLIP, 1 + CLIP) * adv).mean()

        hessians.append(torch.func.hessian(ppo)(vec))
    ratios = torch.exp(logp_first - logp_old)
    assert ((ratios > 1 + CLIP) | (ratios < 1 - CLIP)).any() and ((ratios - 1).abs() < CLIP).any()
    return loop, stack, exp, torch.stack(hessians)


def test_certificate_of_the_ppo_loss_matches_the_explicit_hessian(tiny_policy):
    loop, stack, exp, H = tiny_policy
    objective = ppo_objective(loop, exp)
    got = certify(objective, stack, k=3, lanczos_steps=H.shape[1], slq_starts=2, slq_steps=8, probes=4, grad_tol=1e-3,
                  negative_tol=1e-3, generator=torch.Generator().manual_seed(1))
    exact = torch.linalg.eigvalsh(H.double())
    assert (exact[:, 0] < -1e-4).all() and (exact[:, -1] > 1e-4).all()  # indefinite: both ends are tested
    torch.testing.assert_close(got["lambda_max"], exact[:, -1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["lambda_min"], exact[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["top"], exact.flip(1)[:, :3], atol=1e-5, rtol=1e-4)
    # the gradient norm against autograd of the hand-written loss
    for i in range(2):
        net = PolicyMLP(4, 2, hidden=[3])
        net.load_state_dict(unstack(stack, i))
        g = torch.autograd.grad(hand_ppo_loss(net, exp.obs, exp.actions, exp.logp_old, exp.adv), list(net.parameters()))
        assert got["grad_norm"][i].item() == pytest.approx(torch.cat([x.flatten() for x in g]).norm().item(), rel=1e-5)
    assert got["verdict"] == ["not_stationary" if g > 1e-3 else "saddle" for g in got["grad_norm"].tolist()]


def test_rl_landing_writes_the_certificate_on_the_ppo_loss(cartpole_run, tmp_path):
    from conftest import compose_cfg
    from distillscape.artifacts import read_json
    from distillscape.errors import ConfigError
    from distillscape.tasks.landing import landing

    certificate = ["analysis.certificate=true", "analysis.certificate_inits=2", "analysis.certificate_eigs=2",
                   "analysis.lanczos_steps=12", "analysis.slq_starts=2", "analysis.slq_steps=6",
                   "analysis.hutchinson_probes=2"]
    base = [f"distilled={cartpole_run}", "logger=none", "analysis.inits=3", "analysis.polish_inits=0",
            "analysis.barrier_points=3"]
    summary = landing(compose_cfg("landing", [*base, *certificate], tmp_path))
    cert = read_json(tmp_path / "certificate.json")
    assert (tmp_path / "density.png").exists()
    s = cert["settings"]
    assert s["objective"].startswith("the PPO loss on fixed reference experience")
    assert s["return_estimate"].startswith("none:") and s["experience"].startswith("reference:")
    assert s["examples"] > 0
    assert set(cert["groups"]) == {"init", "landing", "direct_minimum"}
    for group, d in cert["groups"].items():
        assert summary["certificate"][group] == d["counts"]
        for p in d["points"]:  # the verdict follows from the point's own numbers by the stated rule
            negative = sum(b < -(r + s["negative_tol"] * abs(p["top"][0])) for b, r in zip(p["bottom"], p["bottom_residual"]))
            want = "not_stationary" if p["grad_norm"] > s["grad_tol"] else "saddle" if negative else "minimum"
            assert p["verdict"] == want and p["negative_count"] == negative
            assert {"lambda_max", "lambda_min", "abs_ratio", "trace_slq", "layer_trace"} <= set(p)
    # the same loss as landing_stats' PPO loss: the direct minimum's gradient there is the policy gradient, not 0
    assert cert["groups"]["direct_minimum"]["points"][0]["grad_norm"] > 0
    from distillscape.report import read_runs, render
    html = render(read_runs([tmp_path]), "t")
    assert "Is the landing a minimum?" in html and "Hessian of the PPO loss on fixed reference experience" in html
    assert "Return estimate certified: none" in html
    with pytest.raises(ConfigError, match="certificate_examples"):
        landing(compose_cfg("landing", [*base, *certificate, "analysis.certificate_examples=100"], tmp_path / "b"))
