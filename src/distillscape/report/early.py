"""Section "Does the distilled data only encode early training?": the trajectory reading and the
early-training analyses (controls, mixing, fair baselines, recognition, influence, curvature) as sentences and a table
that use the same statistics."""
from __future__ import annotations

from ..landing import STATS as LANDING_STATS
from ..stats import separated
from .landing import landing_kinds
from .text import _ci, _is_number, ci_text


def trajectory_reading(stats: dict, kind: str = "distilled") -> dict | None:
    """Where a kind's landings agree most with direct training from their inits, from the per-landing
    statistics the landing table shows (agreement_peak_step, agreement_peak, agreement_last, agreement_drop),
    each with its 95% interval: {"text", "verdict"} with verdict early / not early / unlike / inconclusive."""
    st = landing_kinds(stats).get(kind, {})
    step, peak, last = _ci(st.get("agreement_peak_step")), _ci(st.get("agreement_peak")), _ci(st.get("agreement_last"))
    if not (step and peak and last):
        return None
    steps = (stats.get("trajectory") or {}).get("steps") or []
    last_step = steps[-1] if steps else None
    drop = _ci(st.get("agreement_drop"))
    text = (f"{kind.replace('_', ' ')}: per landing, agreement with direct training from the same init peaks at step "
            f"{ci_text(step)} with {ci_text(peak, True)} of test predictions, and is {ci_text(last, True)} at the last "
            f"checkpoint" + (f" (step {last_step})" if last_step is not None else "") + " (means with 95% intervals, "
            "the statistics of the landing table): ")
    falls = separated(drop, 0.0) > 0 if drop else separated(peak, last) > 0
    before_end = last_step is not None and separated(step, float(last_step)) < 0
    if _is_number(peak["hi"]) and peak["hi"] < 0.5:
        verdict, text = "unlike", text + "it shares few predictions with any checkpoint, so the landing is unlike direct training."
    elif falls and before_end:
        verdict = "early"
        text += ("the peak lies before the last checkpoint and agreement falls after it" +
                 (f" (by {ci_text(drop, True)})" if drop else "") + ", both beyond their intervals: the landing resembles "
                 "an earlier point of training than its end. Agreement is bounded by accuracy, so this alone cannot tell "
                 "an early point from any network of equal accuracy (the accuracy-matched controls can).")
    else:
        verdict = "inconclusive"
        why = [] if before_end else ["the peak step's interval reaches the last checkpoint"]
        why += [] if falls else ["the fall after the peak" + (f" ({ci_text(drop, True)})" if drop else "") + " does not exclude 0"]
        text += "inconclusive: " + " and ".join(why) + "."
    match = _ci(st.get("steps_to_match"))
    if match and match["mean"] > 0:
        text += f" Direct training needs {ci_text(match)} steps to reach the landing's train loss."
    return {"text": text, "verdict": verdict}


def trajectory_summary(stats: dict) -> list[str]:
    """trajectory_reading of every kind that has the trajectory statistics."""
    return [r["text"] for kind in landing_kinds(stats) if (r := trajectory_reading(stats, kind))]


def _steps_text(matched: list[int], steps: list[int]) -> str:
    """Matched checkpoints: "step X", "steps X–Y" when they are consecutive checkpoints, else listed."""
    if len(matched) == 1:
        return f"step {matched[0]}"
    at = [steps.index(s) for s in matched]
    if at == list(range(at[0], at[-1] + 1)):
        return f"steps {matched[0]}–{matched[-1]}"
    return "steps " + ", ".join(map(str, matched[:-1])) + f" and {matched[-1]}"


def curvature_reading(cv: dict) -> tuple[str, list[list[str]]]:
    """The curvature part (early.json "curvature"): where the landings' true-task Hessian trace falls on the
    direct-training curve from the same inits (the paired difference landing − checkpoint per step, a step
    matched when its 95% interval holds 0), the top eigenvalue's match, and the distilled batch's own cost's
    curvature at the inits and the landings: (sentence, table rows) from the same statistics."""
    rows = []
    along, land, own = cv["true_task"]["along"], cv["true_task"]["landing"], cv["distilled_cost"]
    for r in along:
        rows.append([f"curvature: true-task trace at step {r['step']}", ci_text(r["trace"]),
                     f"top eigenvalue {ci_text(r['top_eig'])}; direct training from the held-out inits"])
    rows.append(["curvature: true-task trace at the landing", ci_text(land["trace"]), f"top eigenvalue {ci_text(land['top_eig'])}"])
    for key, name in (("trace", "trace"), ("top_eig", "top eigenvalue")):
        m = cv["match"][key]
        word = {"matched": f"matches {_steps_text(m['matched'], cv['steps'])}" if m["verdict"] == "matched" else "",
                "inconclusive": "inconclusive", "above": "above every checkpoint", "below": "below every checkpoint",
                "between": "between steps " + "; ".join(f"{a} and {b}" for a, b in m.get("between", []))}[m["verdict"]]
        rows.append([f"curvature: landing's {name} on the direct-training curve", word,
                     "paired landing − checkpoint (same init); a step matches when its 95% interval holds 0"])
    for d in cv["match"]["trace"]["differences"]:
        rows.append([f"curvature: landing − step {d['step']} trace", ci_text(d), "paired over inits"])
    for where in ("init", "landing"):
        rows.append([f"curvature: distilled cost's trace at the {where}s", ci_text(own[where]["trace"]),
                     f"top eigenvalue {ci_text(own[where]['top_eig'])}; the inner loss ({cv['inner_loss']}) on the distilled batch"])
    rows.append(["curvature: distilled cost's trace, landing − init", ci_text(own["landing_minus_init"]["trace"]), "paired over inits"])

    m = cv["match"]["trace"]
    text = (f"Curvature along direct training ({cv['inits']} inits, true task on {cv['examples']} training examples): the "
            f"landing's true-task Hessian trace is {ci_text(land['trace'])}, against {ci_text(along[0]['trace'])} at the "
            f"init and {ci_text(along[-1]['trace'])} at step {along[-1]['step']} of direct training; ")
    if m["verdict"] == "matched":
        text += (f"it matches direct training at {_steps_text(m['matched'], cv['steps'])}, where the paired difference "
                 "landing − checkpoint has a 95% interval holding 0, and is separated from the other checkpoints.")
    elif m["verdict"] == "inconclusive":
        text += f"inconclusive: {m['why']}, so the curve cannot place the landing."
    elif m["verdict"] == "between":
        text += ("it lies between the checkpoints at steps " + "; ".join(f"{a} and {b}" for a, b in m["between"]) +
                 ", separated from every checkpoint.")
    else:
        text += (f"it is {'above' if m['verdict'] == 'above' else 'below'} every checkpoint's, beyond the intervals: "
                 f"{'sharper' if m['verdict'] == 'above' else 'flatter'} than any point of direct training measured.")
    top = cv["match"]["top_eig"]
    if top["verdict"] == "matched":
        text += f" The top eigenvalue ({ci_text(land['top_eig'])}) matches {_steps_text(top['matched'], cv['steps'])}."
    else:
        text += f" The top eigenvalue ({ci_text(land['top_eig'])}) is " + {
            "inconclusive": "not placed by the curve (inconclusive).", "above": "above every checkpoint's.",
            "below": "below every checkpoint's.",
            "between": "between the checkpoints at steps " + "; ".join(f"{a} and {b}" for a, b in top.get("between", [])) + "."}[top["verdict"]]
    text += (f" The distilled batch's own cost ({cv['inner_loss']}) has trace {ci_text(own['init']['trace'])} at the "
             f"inits and {ci_text(own['landing']['trace'])} at the landings.")
    return text, rows


def early_training(stats: dict, early: dict) -> tuple[list[str], list[list[str]]]:
    """The early-training section of one landing run (landing_stats.json, early.json): sentences and a table
    that use the same statistics. A reading is stated only where an interval separates it from its
    alternative; otherwise the sentence says inconclusive and why."""
    out, rows = [], []

    def row(name, d, what, pct=False):
        rows.append([name, ci_text(d, pct), what])

    traj = trajectory_reading(stats) if stats else None
    st = landing_kinds(stats or {}).get("distilled", {})
    for name in ("agreement_peak_step", "agreement_peak", "agreement_last", "agreement_drop"):
        if _ci(st.get(name)):
            row(f"trajectory: {name}", _ci(st[name]), LANDING_STATS.get(name, ""), pct=name != "agreement_peak_step")
    if traj:
        out.append(traj["text"])

    c = early.get("controls")
    control_verdict = None
    if c:
        ag, diff = c["agreement"], c["difference"]
        row("controls: landing test accuracy", c["landing_test_acc"], "one step on the distilled batch", True)
        row(f"controls: subset {c['chosen']:g} test accuracy", next(f["test_acc"] for f in c["fractions"] if f["fraction"] == c["chosen"]),
            f"{c['controls_per_init']} networks per init trained on random subsets (the size nearest the landings' accuracy)", True)
        row("controls: matched checkpoint step", c["checkpoint_step"], "the direct-training checkpoint nearest the landing's test accuracy")
        for k, what in (("landing_checkpoint", "landing vs that checkpoint (same init)"),
                        ("landing_controls", "landing vs the subset controls (same init)"),
                        ("controls_controls", "the controls among themselves"),
                        ("checkpoint_controls", "that checkpoint vs the controls")):
            row(f"controls: agreement {k.replace('_', ' vs ')}", ag[k], what, True)
        d = diff["checkpoint_minus_controls"]
        row("controls: checkpoint − controls", d, "landing's agreement with its checkpoint minus with the controls", True)
        control_verdict = {1: "early", -1: "not early"}.get(separated(d, 0.0), "inconclusive")
        acc_gap = separated(c["landing_test_acc"], next(f["test_acc"] for f in c["fractions"] if f["fraction"] == c["chosen"]))
        text = (f"Against accuracy-matched controls ({c['inits']} inits): the landing agrees with its accuracy-matched "
                f"direct-training checkpoint (step {ci_text(c['checkpoint_step'])}) on {ci_text(ag['landing_checkpoint'], True)} "
                f"of test predictions, with networks trained on {c['chosen']:g} of the training data from the same init on "
                f"{ci_text(ag['landing_controls'], True)}, and those networks agree among themselves on "
                f"{ci_text(ag['controls_controls'], True)}; the difference checkpoint − controls is {ci_text(d, True)}: ")
        text += {"early": "the landing shares more with early training than accuracy alone explains.",
                 "not early": "the landing shares more with networks of equal accuracy that are not early training than "
                              "with early training.",
                 "inconclusive": "the interval includes 0, so agreement does not tell early training from equal accuracy."}[control_verdict]
        if acc_gap:
            text += (" Caution: the controls' accuracy interval does not overlap the landings' "
                     "(analysis.control_fractions can bring it closer).")
        out.append(text)

    m = early.get("mixing")
    if m:
        for r in m["rows"]:
            row(f"mixing k={r['per_class']}: distilled + real test accuracy", r["mixed"]["test_acc"],
                f"{r['real_images']} real images added (scaled one-hot labels, the distilled rate)", True)
            if r.get("real_alone"):
                row(f"mixing k={r['per_class']}: real alone", r["real_alone"]["test_acc"], f"hard labels, rate {r['real_lr']:.3g} tuned on val", True)
                row(f"mixing k={r['per_class']}: difference", r["mixed_minus_alone"]["test_acc"], "distilled + real minus real alone", True)
        parts = []
        for r in m["rows"]:
            if r.get("mixed_minus_alone"):
                d = r["mixed_minus_alone"]["test_acc"]
                word = {1: "adds to", -1: "takes from", 0: "makes no difference beyond its interval to"}[separated(d, 0.0)]
                parts.append(f"at {r['per_class']} per class the distilled batch {word} the real images ({ci_text(d, True)})")
        if parts:
            out.append("Mixing real images into the distilled batch: " + "; ".join(parts) + ".")

    f = early.get("fair_baselines")
    if f:
        for arm, d in f["arms"].items():
            row(f"fair: {arm.replace('_', ' ')} train accuracy", d["train_acc"], "", True)
            row(f"fair: {arm.replace('_', ' ')} test accuracy", d["test_acc"], "", True)
        for split in ("train_acc", "test_acc"):
            dd = f["direct"][split]
            rows.append([f"fair: direct training {split.replace('_', ' ')}", f"{dd['mean']:.1%} ± {dd['std']:.1%} "
                         f"(mean ± std, {dd['n']} seeds); 95% {ci_text(dd, True)}", "trained on the whole training split"])
        row("fair: what the labels carry", f["labels_carry"]["test_acc"], "learned − hard labels, same real images (test accuracy)", True)
        row("fair: what the images carry", f["images_carry"]["test_acc"], "distilled − learned labels on real images (test accuracy)", True)
        lab, img = f["labels_carry"]["test_acc"], f["images_carry"]["test_acc"]
        say = {1: "raise", -1: "lower", 0: "do not change beyond their interval"}
        out.append(f"Fair baselines ({f['images']} random real images): learned soft labels and rates {say[separated(lab, 0.0)]} "
                   f"one-step test accuracy over hard labels ({ci_text(lab, True)}); the distilled images "
                   f"{say[separated(img, 0.0)]} it over real images with learned labels ({ci_text(img, True)}). Direct "
                   f"training: {f['direct']['test_acc']['mean']:.1%} ± {f['direct']['test_acc']['std']:.1%} test accuracy "
                   f"over {f['direct_seeds']} seeds.")

    r = early.get("recognition")
    if r:
        along = r["along_training"]
        for a in along:
            row(f"recognition: step {a['step']} on the distilled images", a["distilled_acc"], f"test set: {ci_text(a['test_acc'], True)}", True)
        for a in r["archs"]:
            row(f"recognition: {a['arch']} after {a['epochs']} epochs", a["distilled_acc"], f"test set: {ci_text(a['test_acc'], True)}", True)
        best = max(along, key=lambda a: a["distilled_acc"]["mean"] if _is_number(a["distilled_acc"]["mean"]) else -1)
        last = along[-1]
        falls = separated(best["distilled_acc"], last["distilled_acc"])
        out.append(f"Recognition (labels' argmax): along direct training the distilled images are recognised best at step "
                   f"{best['step']} ({ci_text(best['distilled_acc'], True)}) and at {ci_text(last['distilled_acc'], True)} "
                   f"at the last checkpoint (step {last['step']}): " +
                   ("recognition falls as training goes on, beyond the intervals (as an early-training summary would)."
                    if falls > 0 else "no fall after the best step beyond the intervals: later networks recognise them as "
                    "well as earlier ones."))

    i = early.get("influence")
    if i:
        n = len(i["images"])
        rows.append(["influence: images that help / harm", f"{i['helpful']} / {i['harmful']} of {n}",
                     "test loss without the image rises / falls beyond its 95% interval"])
        out.append(f"Leave-one-out influence ({i['inits']} inits): removing {i['helpful']} of the {n} distilled images raises "
                   f"test loss beyond its interval, removing {i['harmful']} lowers it.")

    if cv := early.get("curvature"):
        text, curvature_rows = curvature_reading(cv)
        out.append(text)
        rows += curvature_rows

    # the reading: from the analysis that separates early training from equal accuracy
    if control_verdict == "early" and (traj is None or traj["verdict"] == "early"):
        out.insert(0, "Reading: distilled data encodes early training — the landing agrees with its accuracy-matched "
                      "early checkpoint more than with accuracy-matched networks that are not early training, beyond "
                      "the 95% intervals.")
    elif control_verdict == "not early":
        out.insert(0, "Reading: not early training — the landing agrees less with its accuracy-matched checkpoint than "
                      "with accuracy-matched networks trained on random subsets, beyond the 95% intervals.")
    else:
        why = ("no accuracy-matched controls were run (analysis.early=[controls]), and agreement with checkpoints alone "
               "cannot tell an early point from any network of equal accuracy" if control_verdict is None else
               "the landing's agreement with its accuracy-matched checkpoint is not separated from its agreement with "
               "accuracy-matched controls" if control_verdict == "inconclusive" else
               "the controls point to early training but the trajectory's peak is not separated from the end of training")
        out.insert(0, f"Reading: inconclusive — {why}.")
    return out, rows
