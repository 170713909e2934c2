"""Named seed streams: every random draw of an evaluation or analysis takes its seed from a base seed
of the config and the name of what it draws, so two draws never share a seed by accident and a reader
sees what each seed is for. The offsets are the values the earlier releases used, so a run reproduces
the numbers it printed then.
"""
from __future__ import annotations

import torch

# distill.eval_seed + offset: the held-out inits and the random-real baseline of a distillation
EVAL_STREAMS = {
    "val_inits": 0,            # validation inits during the distillation
    "test_inits": 1,           # the held-out test inits (eval_inits of them)
    "random_real_tune": 2,     # inits and batches that tune the random-real baseline's rate on val
    "random_real_test": 3,     # inits and batches of its test evaluation
    "rl_val_episodes": 4,      # RL tasks: the episode seeds of validation
    "rl_test_episodes": 5,     # ... of the held-out test (the same for every init and every baseline)
    "rl_baseline_tune": 6,     # ... inits and episodes that tune the RL baselines' rates
    "rl_baseline_batch": 7,    # ... the random states and action labels, and the PPO-visited states
    "rate_tune": 8,            # inits that tune the one-step rate of a method that does not learn one (dm, gm, ...)
    "minibatch_order": 9,      # the minibatches of the minibatch evaluation protocol
}

# analysis.seed + offset: the landing analysis (distillscape-landing)
ANALYSIS_STREAMS = {
    "train_subsample": 0,      # the fixed train subsample the true task is measured on
    "curvature": 1,            # power-iteration start vectors and Hutchinson probes
    "polish": 2,               # minibatches of the SGD polish from the landings
    "trajectory": 3,           # minibatches of the direct-training run from the same inits
    "random_real_tune": 10,    # tuning the random-real kind's rate
    "random_real_batches": 11, # the random-real kind's batches
    "random_synthetic": 12,    # the random-synthetic kind's noise batches and labels
    "rl_episodes": 13,         # RL runs: the episode seeds every policy is measured on
    "rl_experience": 14,       # ... the static experience set of the PPO loss (the PPO minimum acting)
    "rl_polish": 15,           # ... the PPO polish from the landings
    "mixing_real": 16,         # early parts (distillscape.early): the real images mixed into the distilled batch
    "mixing_tune": 17,         # ... the rate of those real images alone
    "control_subsets": 18,     # ... the random subsets the accuracy-matched controls train on
    "fair_images": 19,         # ... the random real images whose labels and rates are learned
    "fair_distill": 20,        # ... the inits of that learning (Lightning's global seed)
    "fair_tune": 21,           # ... the rate of those images with hard labels
    "fair_direct": 22,         # ... the directly trained networks (seed + 0, 1, ...)
    "recognition": 40,         # ... the networks of other architectures (seed + 0, 1, ...; 40: room for fair_direct's)
    "certificate": 90,         # the curvature certificate: Lanczos starts, SLQ starts, Hutchinson probes (90: past
    "certificate_subsample": 91,  # ... fair_direct's and recognition's per-network streams); its train subsample
    "curve": 92,               # the curved paths landing -> direct minimum (distillscape.basins): minibatches and t draws
    "early_curvature": 93,     # early part curvature: Lanczos starts and Hutchinson probes along direct training
}

STREAMS = {"eval": EVAL_STREAMS, "analysis": ANALYSIS_STREAMS}

# a stream of the job's seed s starts RUN_SEED_STRIDE * s past the base: apart from every other stream of
# the same base (their offsets stay below it), and seed 0 draws what the earlier releases drew
RUN_SEED_STRIDE = 1000


def seed_for(base: int, family: str, stream: str, run_seed: int = 0) -> int:
    """The seed of `stream` (a name of STREAMS[family]) drawn from base seed `base`. run_seed: the job's
    seed, for a stream whose draws are part of what a seed stands for (the random-real baseline's
    batches: a table over seeds must show their spread), not the held-out inits every seed shares."""
    try:
        return int(base) + RUN_SEED_STRIDE * int(run_seed) + STREAMS[family][stream]
    except KeyError:
        raise KeyError(f"unknown seed stream {family}/{stream}; known: "
                       + ", ".join(f"{f}/{s}" for f, ss in STREAMS.items() for s in ss)) from None


def generator(base: int, family: str, stream: str) -> torch.Generator:
    """A CPU generator seeded for `stream` (the same draws on every machine and device)."""
    return torch.Generator().manual_seed(seed_for(base, family, stream))
