"""The early-training analyses (issue 25): leave-one-out influence against retraining without each image,
one at a time; agreement against a direct count; the scaled labels and the subset training against hand
computations; and the landing task's early parts end to end on a real distillation run."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from distillscape.early import (DistilledCost, agreement, control_agreements, influence, influence_summary,
                                matched_steps, nearest_checkpoint, scaled_onehot, trace_and_top, train_on_subsets)
from distillscape.inner import InitSampler, InnerLoop, evaluate_stack, inner_loss, weighted_inner_loss
from distillscape.landing import TrueTask, sgd_checkpoints
from distillscape.models import MLP
from distillscape.params import flatten, unflatten, unstack


@pytest.fixture(scope="module", params=["mse", "soft_ce"])
def tiny(request):
    torch.manual_seed(0)
    net = MLP(1, 4, 4, 3, hidden=[8])
    loop = InnerLoop(net, request.param)
    images, labels = torch.randn(6, 1, 4, 4), torch.randn(6, 3)
    lrs = torch.tensor([[0.3], [0.2]])  # two inner steps: the removal must hold through every step
    test_x, test_y = torch.randn(40, 1, 4, 4), torch.randint(0, 3, (40,))
    return loop, InitSampler(net).sample(4, seed=3), images, labels, lrs, test_x, test_y


def test_weighted_loss_of_ones_is_the_inner_loss_and_a_zero_removes(tiny):
    loop, inits, images, labels, *_ = tiny
    logits = loop.forward(unstack(inits, 0), images)
    torch.testing.assert_close(weighted_inner_loss(logits, labels, torch.ones(6), loop.loss),
                               inner_loss(logits, labels, loop.loss))
    w = torch.ones(6)
    w[2] = 0
    keep = [0, 1, 3, 4, 5]
    torch.testing.assert_close(weighted_inner_loss(logits, labels, w, loop.loss),
                               inner_loss(logits[keep], labels[keep], loop.loss))


def test_influence_matches_retraining_without_each_image(tiny):
    """The vmapped removals against the slow, obviously correct path: for each image, the inner steps
    run from scratch on the batch with that image sliced out, and the test loss measured directly."""
    loop, inits, images, labels, lrs, test_x, test_y = tiny
    got = influence(loop, inits, images, labels, lrs, test_x, test_y, data_chunk=16)
    full = loop.run_stack(inits, images, labels, lrs)
    full_acc, full_loss = evaluate_stack(loop, {k: v.detach() for k, v in full.items()}, test_x, test_y)
    for i in range(images.shape[0]):
        keep = [j for j in range(images.shape[0]) if j != i]
        without = loop.run_stack(inits, images[keep], labels[keep], lrs)
        without = {k: v.detach() for k, v in without.items()}
        acc, loss = evaluate_stack(loop, without, test_x, test_y)
        torch.testing.assert_close(got["delta_test_loss"][i], loss - full_loss, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got["delta_test_acc"][i], acc - full_acc, atol=1e-6, rtol=0)
        per_test = torch.stack([F.cross_entropy(loop.forward(unstack(without, m), test_x), test_y, reduction="none")
                                - F.cross_entropy(loop.forward(unstack(full, m), test_x), test_y, reduction="none")
                                for m in range(4)]).mean(0)
        torch.testing.assert_close(got["per_test_delta"][i], per_test.detach(), atol=1e-5, rtol=1e-4)
    summary = influence_summary(got, labels, test_y, top=3)
    best = got["per_test_delta"][0].argsort(descending=True)[:3].tolist()
    assert [h["test_index"] for h in summary["images"][0]["helps_most"]] == best
    d = summary["images"][0]["delta_test_loss"]
    assert d["lo"] < d["mean"] < d["hi"] and d["n"] == 4


def test_agreement_against_a_direct_count():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 3, (4, 30), generator=g), torch.randint(0, 3, (5, 30), generator=g)
    got = agreement(a, b)
    for i, j in itertools.product(range(4), range(5)):
        same = sum(1 for n in range(30) if a[i, n].item() == b[j, n].item())
        assert got[i, j].item() == pytest.approx(same / 30)
    landing, ckpt, controls = a[:2], b[:2], torch.randint(0, 3, (2, 3, 30), generator=g)
    out = control_agreements(landing, ckpt, controls)
    for p in range(2):
        def count(u, v):
            return sum(1 for n in range(30) if u[n].item() == v[n].item()) / 30
        assert out["landing_checkpoint"][p].item() == pytest.approx(count(landing[p], ckpt[p]))
        assert out["landing_controls"][p].item() == pytest.approx(sum(count(landing[p], c) for c in controls[p]) / 3)
        pairs = [count(controls[p][i], controls[p][j]) for i in range(3) for j in range(3) if i != j]
        assert out["controls_controls"][p].item() == pytest.approx(sum(pairs) / len(pairs))
        assert out["checkpoint_controls"][p].item() == pytest.approx(sum(count(ckpt[p], c) for c in controls[p]) / 3)


def test_nearest_checkpoint_by_accuracy():
    acc = torch.tensor([[0.1, 0.1], [0.5, 0.8], [0.9, 0.9]])  # [T=3, P=2]
    assert nearest_checkpoint(acc, torch.tensor([0.6, 0.83])).tolist() == [1, 1]
    assert nearest_checkpoint(acc, torch.tensor([0.0, 1.0])).tolist() == [0, 2]


def test_scaled_onehot_has_the_distilled_labels_mean_margin():
    labels = torch.tensor([[1.0, 0.0, 0.2], [0.1, 2.0, 0.1]])  # margins 0.9 and 1.9; other entries 0.1 on average
    got = scaled_onehot(torch.tensor([2, 0]), labels, 3)
    torch.testing.assert_close(got, torch.tensor([[0.1, 0.1, 1.5], [1.5, 0.1, 0.1]]))


def test_train_on_subsets_is_full_batch_momentum_descent(tiny):
    loop, inits, *_ = tiny
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(4, 5, 1, 4, 4, generator=g), torch.randint(0, 3, (4, 5), generator=g)
    got = train_on_subsets(loop, inits, xs, ys, steps=2, lr=0.1, momentum=0.9)
    for m in range(4):
        p = {k: v.clone().requires_grad_() for k, v in unstack(inits, m).items()}
        vel = {k: torch.zeros_like(v) for k, v in p.items()}
        for _ in range(2):
            gs = torch.autograd.grad(F.cross_entropy(loop.forward(p, xs[m]), ys[m]), list(p.values()))
            for (k, v), gk in zip(list(p.items()), gs):
                vel[k] = 0.9 * vel[k] + gk
                p[k] = (v - 0.1 * vel[k]).detach().requires_grad_()
        for k in p:
            torch.testing.assert_close(got[k][m], p[k].detach(), atol=1e-5, rtol=1e-5)


# -- curvature along direct training ---------------------------------------------------------------------------
def explicit_hessians(loop, stack, loss):
    """The Hessian of loss(params) at every model of a stack, by torch.func.hessian of the flat vector: [M, D, D]."""
    out = []
    for i in range(stack[loop.names[0]].shape[0]):
        params = unstack(stack, i)
        out.append(torch.func.hessian(lambda v, like=params: loss(unflatten(v, like)))(flatten(params, loop.names).detach()))
    return torch.stack(out)


@pytest.mark.parametrize("cost, loss", [("true_task", "mse"), ("distilled", "mse"), ("distilled", "soft_ce")])
def test_trace_and_top_match_the_explicit_hessian_at_checkpoints(cost, loss):
    """A stack of direct-training checkpoints (steps 0, 3 and 10 of SGD from two inits: six points in one
    stack) of a 35-parameter MLP, on the true task and on the distilled batch's own cost (mse and soft_ce):
    the Hutchinson trace within four standard errors of the exact trace of the explicit Hessian, the Lanczos
    top eigenvalue equal to its top eigenvalue (the Lanczos run spans the whole space)."""
    torch.manual_seed(0)
    net = MLP(1, 2, 2, 3, hidden=[4])
    loop = InnerLoop(net, loss)
    x, y = torch.randn(23, 1, 2, 2), torch.randint(0, 3, (23,))
    images, labels = torch.randn(5, 1, 2, 2), torch.randn(5, 3)
    ckpts = sgd_checkpoints(loop, InitSampler(net).sample(2, seed=3), x, y, [0, 3, 10], lr=0.5, momentum=0.9,
                            batch_size=8, generator=torch.Generator().manual_seed(2))
    stack = {k: torch.cat([c[k] for c in ckpts]) for k in loop.names}
    if cost == "true_task":
        task = TrueTask(loop, x, y, data_chunk=10)  # chunks of 10 over 23 examples: the last one is short
        H = explicit_hessians(loop, stack, lambda p: F.cross_entropy(loop.forward(p, x), y))
    else:
        task = DistilledCost(loop, images, labels)
        H = explicit_hessians(loop, stack, lambda p: inner_loss(loop.forward(p, images), labels, loop.loss))
    d = H.shape[1]
    # rows=4: the six points in two passes of unequal size, each point's products as in one pass
    got = trace_and_top(task, stack, probes=300, lanczos_steps=d, generator=torch.Generator().manual_seed(5), rows=4)
    exact_trace = torch.diagonal(H, dim1=1, dim2=2).sum(1).double()
    assert ((got["trace"] - exact_trace).abs() <= 4 * got["trace_se"]).all(), (got["trace"], exact_trace)
    assert (got["trace_se"] < 0.1 * exact_trace.abs()).all()  # tight enough to mean something
    torch.testing.assert_close(got["top_eig"], torch.linalg.eigvalsh(H.double())[:, -1], atol=1e-5, rtol=1e-4)
    # the checkpoints differ: a stack that measured one point six times would fail the per-point checks above
    assert exact_trace.unique().numel() == 6


def _curve(point_shift, noise, p=8):
    """A hand-made curve [T=5, P] over steps 0, 1, 10, 100, 1000: 1, 4, 9, 6, 5 plus per-init noise, and a point
    [P] equal to step 10's value plus `point_shift` (own noise: `noise`)."""
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([1.0, 4.0, 9.0, 6.0, 5.0])
    curve = base[:, None] + 0.01 * torch.randn(5, p, generator=g, dtype=torch.float64)
    return curve[2] + point_shift + noise * torch.randn(p, generator=g, dtype=torch.float64), curve


STEPS = [0, 1, 10, 100, 1000]


def test_matched_steps_on_a_hand_made_curve():
    point, curve = _curve(0.0, 0.01)
    got = matched_steps(point, curve, STEPS)
    assert got["verdict"] == "matched" and got["matched"] == [10] and (got["first"], got["last"]) == (10, 10)
    d = got["differences"]
    assert [r["step"] for r in d] == STEPS and d[0]["mean"] == pytest.approx((point - curve[0]).mean().item())
    point, curve = _curve(-3.5, 0.01)  # 5.5: above 1 and 4, below 9 and 6, above 5: crosses twice
    got = matched_steps(point, curve, STEPS)
    assert got["verdict"] == "between" and got["between"] == [[1, 10], [100, 1000]] and got["matched"] == []
    assert matched_steps(*_curve(2.0, 0.01), STEPS)["verdict"] == "above"  # 11: above every checkpoint
    assert matched_steps(*_curve(-8.5, 0.01), STEPS)["verdict"] == "below"  # 0.5
    point, curve = _curve(-4.0, 0.01)  # 5: matches step 1000 alone
    assert matched_steps(point, curve, STEPS)["matched"] == [1000]
    wide = matched_steps(*_curve(0.0, 30.0), STEPS)  # an interval as wide as the whole curve
    assert wide["verdict"] == "inconclusive" and wide["matched"] == STEPS
    one = matched_steps(*_curve(0.0, 0.01, p=1), STEPS)  # a single init: no interval
    assert one["verdict"] == "inconclusive" and "no interval" in one["why"]


def _curvature_summary(point, curve):
    """An early.json "curvature" entry built from a hand-made trace curve (the top eigenvalue: the same values)."""
    from distillscape.stats import interval

    p = point.numel()
    along = [{"step": s, "trace": interval(curve[i]), "top_eig": interval(curve[i])} for i, s in enumerate(STEPS)]
    own = {"trace": interval(torch.ones(p)), "top_eig": interval(torch.ones(p))}
    return {"inits": p, "examples": 100, "steps": STEPS, "inner_loss": "mse",
            "true_task": {"along": along, "landing": {"trace": interval(point), "top_eig": interval(point)}},
            "distilled_cost": {"init": own, "landing": own, "landing_minus_init": own},
            "match": {k: matched_steps(point, curve, STEPS) for k in ("trace", "top_eig")}}


@pytest.mark.parametrize("shift, noise, says", [
    (0.0, 0.01, "it matches direct training at step 10,"),
    (-3.5, 0.01, "it lies between the checkpoints at steps 1 and 10; 100 and 1000"),
    (2.0, 0.01, "it is above every checkpoint's"),
    (0.0, 30.0, "inconclusive: the difference's interval holds 0 at every checkpoint"),
])
def test_curvature_sentence_states_what_the_intervals_separate(shift, noise, says):
    from distillscape.report import early_training
    from distillscape.report.text import ci_text

    cv = _curvature_summary(*_curve(shift, noise))
    lines, rows = early_training({}, {"curvature": cv})
    sentence = next(line for line in lines if line.startswith("Curvature along direct training"))
    assert says in sentence, sentence
    # the sentence quotes the table's values
    assert ci_text(cv["true_task"]["landing"]["trace"]) in sentence
    assert next(r for r in rows if r[0] == "curvature: true-task trace at the landing")[1] == ci_text(cv["true_task"]["landing"]["trace"])


def test_curvature_sentence_names_a_run_of_matched_checkpoints_as_a_range():
    from distillscape.report import early_training

    point, curve = _curve(0.0, 0.01)
    curve[3] = curve[2] + 0.001 * torch.arange(curve.shape[1])  # step 100 as high as step 10: both match
    cv = _curvature_summary(point, curve)
    assert cv["match"]["trace"]["matched"] == [10, 100]
    assert "it matches direct training at steps 10–100," in early_training({}, {"curvature": cv})[0][-1]
    point, curve = _curve(0.0, 0.01)
    curve = torch.stack([curve[2], curve[1], curve[0], curve[2], curve[4]])  # steps 0 and 100 match, 1 and 10 not
    cv = _curvature_summary(point, curve)
    assert cv["match"]["trace"]["matched"] == [0, 100]
    assert "it matches direct training at steps 0 and 100," in early_training({}, {"curvature": cv})[0][-1]


# -- the landing task's early parts, end to end -------------------------------------------------------------
TINY_EARLY = ["analysis.kinds=[distilled]", "analysis.inits=4", "analysis.polish_inits=0", "analysis.curvature_inits=0",
              "analysis.train_examples=300", "analysis.trajectory_inits=4", "analysis.trajectory_steps=[1,5,20]",
              "baseline.tune_inits=2", "baseline.lr_grid=[0.1,1.0]", "analysis.early_inits=4",
              "analysis.mixing_per_class=[0,2]", "analysis.control_fractions=[0.01,0.05]", "analysis.control_models=2",
              "analysis.control_steps=5", "analysis.fair_steps=5", "analysis.fair_direct_seeds=2",
              "analysis.fair_direct_epochs=1", "analysis.influence_top=3", "analysis.recognition_archs=[mlp]",
              "analysis.recognition_epochs=[1,2]", "analysis.recognition_seeds=2"]
ALL_PARTS = "analysis.early=[influence,mixing,controls,fair_baselines,recognition]"


def test_early_parts_end_to_end_and_resumed(digits_run, tmp_path, capsys):
    from distillscape.artifacts import read_json
    from distillscape.tasks.landing import landing
    from test_landing import compose_landing

    out = tmp_path / "landing"
    landing(compose_landing([f"distilled={digits_run}", "logger=none", *TINY_EARLY, ALL_PARTS], out))
    early = read_json(out / "early.json")
    assert list(early) == ["influence", "mixing", "controls", "fair_baselines", "recognition"]
    assert read_json(out / "landing_stats.json")["early"]["parts"] == list(early)
    for name in early:
        assert (out / f"{name}.png").stat().st_size > 5_000, name
    n_images = read_json(digits_run / "distilled.json")["num_classes"]  # images_per_class=1
    inf = early["influence"]
    assert len(inf["images"]) == n_images and all(len(d["helps_most"]) == 3 for d in inf["images"])
    assert all(d["delta_test_loss"]["n"] == 4 for d in inf["images"])
    mix = early["mixing"]["rows"]
    assert [r["per_class"] for r in mix] == [0, 2] and mix[0]["real_alone"] is None and mix[1]["real_lr"] in (0.1, 1.0)
    c = early["controls"]
    n_train = len(__import__("distillscape.run", fromlist=["Run"]).Run.open(digits_run).datamodule().train_y)
    assert c["chosen"] in (0.01, 0.05) and [f["images"] for f in c["fractions"]] == [round(0.01 * n_train), round(0.05 * n_train)]
    assert set(c["agreement"]) == {"landing_checkpoint", "landing_controls", "controls_controls", "checkpoint_controls"}
    assert all(0 <= v["mean"] <= 1 and v["n"] == 4 for v in c["agreement"].values())
    fair = early["fair_baselines"]
    assert fair["learned_images_unchanged"] and fair["direct"]["test_acc"]["n"] == 2
    assert set(fair["arms"]) == {"real_hard_labels", "real_learned_labels", "distilled"}
    # the distilled arm and the mixing row k=0 are the same landings of the same inits
    assert fair["arms"]["distilled"]["test_acc"]["mean"] == pytest.approx(mix[0]["mixed"]["test_acc"]["mean"])

    # recognition: at step 0 (the inits themselves) against a direct count of the distilled images they classify
    # as their labels' argmax; every architecture at every listed epoch
    from distillscape.run import Run
    run = Run.open(digits_run)
    inits = run.inits(4, seed=compose_landing([f"distilled={digits_run}"], out).analysis.init_seed)
    d = run.distilled
    direct_count = [sum(int(p == t) for p, t in zip(run.loop().forward({k: v[i] for k, v in inits.items()}, d.images)
                                                     .argmax(-1).tolist(), d.labels.argmax(-1).tolist())) / len(d.labels)
                    for i in range(4)]
    rec = early["recognition"]
    assert rec["along_training"][0]["step"] == 0
    assert rec["along_training"][0]["distilled_acc"]["mean"] == pytest.approx(sum(direct_count) / 4, abs=1e-6)
    assert [(r["arch"], r["epochs"], r["distilled_acc"]["n"]) for r in rec["archs"]] == [("mlp", 1, 2), ("mlp", 2, 2)]

    # a rerun reuses every part; another mixing setting (into this directory: skip_complete=false, since the
    # directory holds a finished job of another config) redoes mixing alone and keeps the landing kinds
    capsys.readouterr()
    landing(compose_landing([f"distilled={digits_run}", "logger=none", *TINY_EARLY, ALL_PARTS], out))
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 6 and read_json(out / "early.json") == early
    landing(compose_landing([f"distilled={digits_run}", "logger=none", *TINY_EARLY, "analysis.mixing_per_class=[0,3]",
                             "analysis.early=[influence,mixing]", "skip_complete=false"], out))
    printed = capsys.readouterr().out
    assert "distilled: reusing" in printed and "early influence: reusing" in printed and "early mixing: done" in printed
    assert [r["per_class"] for r in read_json(out / "early.json")["mixing"]["rows"]] == [0, 3]


def test_curvature_part_end_to_end_and_its_report_sentence(digits_run, tmp_path, capsys):
    """analysis.early=[curvature] on a real distillation: the checkpoints of direct training (steps 0, 1, 5, 20
    from every held-out init) and the landings in early/curvature.json, the match recomputed from the per-point
    values it keeps, the figure, a rerun that reuses it, and the report's sentence quoting the table's values."""
    from distillscape.artifacts import read_json
    from distillscape.report import early_training
    from distillscape.report.text import ci_text
    from distillscape.stats import interval
    from distillscape.tasks.landing import landing
    from test_landing import compose_landing

    out = tmp_path / "landing"
    args = [f"distilled={digits_run}", "logger=none", *TINY_EARLY, "analysis.early=[curvature]",
            "analysis.curvature_examples=100", "analysis.early_curvature_probes=3", "analysis.early_curvature_lanczos_steps=6"]
    landing(compose_landing(args, out))
    cv = read_json(out / "early.json")["curvature"]
    assert (out / "curvature.png").stat().st_size > 5_000
    assert cv["steps"] == [0, 1, 5, 20] and cv["inits"] == 4 and cv["examples"] == 100
    pp = cv["per_point"]
    assert [len(r) for r in pp["checkpoint_trace"]] == [4] * 4 and len(pp["landing_trace"]) == 4
    assert len(pp["distilled_cost_trace"]) == 2 and all(len(r) == 4 for r in pp["distilled_cost_trace"])
    for key in ("trace", "top_eig"):
        point, curve = (torch.tensor(pp[f"{w}_{key}"], dtype=torch.float64) for w in ("landing", "checkpoint"))
        assert matched_steps(point, curve, cv["steps"]) == cv["match"][key]
        assert cv["true_task"]["landing"][key] == pytest.approx(interval(point))
    # the paired differences are per init, so their mean is the difference of the means (landing − step 0)
    d0 = cv["match"]["trace"]["differences"][0]
    assert d0["mean"] == pytest.approx(cv["true_task"]["landing"]["trace"]["mean"] - cv["true_task"]["along"][0]["trace"]["mean"])
    lines, rows = early_training({}, {"curvature": cv})
    sentence = next(line for line in lines if line.startswith("Curvature along direct training"))
    landing_row = next(r for r in rows if r[0] == "curvature: true-task trace at the landing")
    assert landing_row[1] == ci_text(cv["true_task"]["landing"]["trace"]) and landing_row[1] in sentence
    verdict = cv["match"]["trace"]["verdict"]
    assert {"matched": "matches direct training at", "inconclusive": "inconclusive", "between": "lies between",
            "above": "above every", "below": "below every"}[verdict] in sentence

    capsys.readouterr()
    landing(compose_landing(args, out))
    assert "early curvature: reusing" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["analysis.early=[influence,oops]"], "analysis.early entry"),
    (["analysis.control_models=1"], "analysis.control_models=1"),
    (["analysis.mixing_per_class=[0,5000]"], "analysis.mixing_per_class"),
    (["analysis.control_fractions=[0,0.1]"], "analysis.control_fractions"),
    (["analysis.early_curvature_probes=0"], "analysis.early_curvature_probes"),
])
def test_bad_early_input_is_one_line_before_the_job_record(digits_run, tmp_path, capsys, args, message):
    from distillscape.tasks.landing import main
    from test_landing import compose_landing

    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as e:
        main(compose_landing([f"distilled={digits_run}", "logger=none", "analysis.early=[mixing]", *args], out))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())
