"""Section "Does one step generalise?": the headline table (one step vs random real vs direct, or an
RL run's returns) and its sentences."""
from __future__ import annotations

from .reading import RunRecord, _metrics
from .text import _is_number


def _ms(m: dict, key: str) -> str:
    return f"{m[key + '_mean']:.4f} ± {m.get(key + '_std', float('nan')):.4f}"


def headline(runs: list[RunRecord]) -> list[list[str]]:
    """One-step vs random real vs direct vs ensemble test accuracy (an RL run: episode returns), from
    whichever runs have them."""
    rows = []
    for run in runs:
        m = _metrics(run)
        if "test/onestep_acc_mean" in m:
            rows.append([f"one step on the distilled batch ({run.label})", _ms(m, "test/onestep_acc"),
                         f"{int(m.get('test/onestep_inits', 0))}"])
        if "test/onestep_random_init_acc_mean" in m:
            rows.append(["  same, from random inits", _ms(m, "test/onestep_random_init_acc"),
                         f"{int(m.get('test/onestep_random_init_inits', 0))}"])
        if "random_real/acc_mean" in m:
            rows.append([f"one step on random real images (lr {m.get('random_real/lr', float('nan')):g})",
                         _ms(m, "random_real/acc"), f"{int(m.get('random_real/inits', 0))}"])
        if "direct/acc" in m:
            rows.append(["direct training", f"{m['direct/acc']:.4f}", "1"])
        # an RL run (env=...): episode returns instead of accuracies
        for key, label in (("test/onestep_return", f"one step on the distilled states: return ({run.path.name})"),
                           ("random_states/return", "one step on random states, random actions: return"),
                           ("ppo_states/return", "one step on PPO-visited states, PPO's actions: return"),
                           ("direct/return", "PPO (direct): return")):
            if f"{key}_mean" in m:
                n = m.get("test/onestep_inits" if key.startswith("test/") else key.split("/")[0] + "/inits", 1)
                rows.append([label, f"{m[key + '_mean']:.1f} ± {m.get(key + '_std', float('nan')):.1f}", f"{int(n)}"])
        inst = run.results.get("instances.json", {}).get("comparisons", {}).get("random_inits")
        if inst:
            k = inst["ensemble_members"]
            rows.append([f"ensemble of {k} one-step models ({run.label})", f"{inst['ensemble_acc']:.4f}", f"{k}"])
            rows.append([f"  its members: mean (best {inst['best_member_acc']:.4f})",
                         f"{inst['member_acc']['mean']:.4f} ± {inst['member_acc']['std']:.4f}", f"{k}"])
    return rows


def accuracy_summary(runs: list[RunRecord]) -> list[str]:
    """What the accuracy table says, in a sentence per run, computed from it."""
    out = []
    for run in runs:
        m = _metrics(run)
        if "test/onestep_acc_mean" not in m or run.sweep is not None:  # a multirun's jobs: its own section
            continue
        a = m["test/onestep_acc_mean"]
        text = f"{run.identity}: one step on the distilled batch reaches {a:.3f} test accuracy " \
               f"({int(m.get('test/onestep_inits', 0))} inits)"
        parts = []
        if "random_real/acc_mean" in m:
            r = m["random_real/acc_mean"]
            parts.append(f"{a - r:+.3f} against one step on as many random real images ({r:.3f})")
        if _is_number(m.get("direct/acc")) and m["direct/acc"] > 0:
            parts.append(f"{a / m['direct/acc']:.0%} of direct training ({m['direct/acc']:.3f})")
        out.append(text + (": " + " and ".join(parts) if parts else "") + ".")
    for run in runs:
        inst = run.results.get("instances.json", {}).get("comparisons", {}).get("random_inits")
        if inst:
            e, mem = inst["ensemble_acc"], inst["member_acc"]["mean"]
            out.append(f"An ensemble of {inst['ensemble_members']} one-step models reaches {e:.3f} against "
                       f"{mem:.3f} for one member: averaging {'helps' if e > mem + 0.005 else 'does not help'}.")
    return out


def return_summary(runs: list[RunRecord]) -> list[str]:
    """What the return table of an RL run says, in a sentence per run, computed from it."""
    out = []
    for run in runs:
        m = _metrics(run)
        if "test/onestep_return_mean" not in m or run.sweep is not None:
            continue
        a = m["test/onestep_return_mean"]
        text = (f"{run.identity}: one step on the distilled states reaches a mean episode return of {a:.1f} "
                f"(min {m.get('test/onestep_return_min', float('nan')):.1f} over {int(m.get('test/onestep_inits', 0))} inits)")
        parts = [f"{a - m[k + '_mean']:+.1f} against one step on {what} ({m[k + '_mean']:.1f})"
                 for k, what in (("random_states/return", "random states"), ("ppo_states/return", "PPO-visited states"))
                 if k + "_mean" in m]
        if _is_number(m.get("direct/return_mean")) and m["direct/return_mean"] > 0:
            parts.append(f"{a / m['direct/return_mean']:.0%} of PPO's return ({m['direct/return_mean']:.1f})")
        out.append(text + (": " + " and ".join(parts) if parts else "") + ".")
    return out
