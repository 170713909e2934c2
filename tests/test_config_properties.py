"""Property: every key a user may set, given a wrong type, an out-of-range, NaN, infinite, huge or negative
value, or a mistyped name, either passes the checks or is refused within seconds by one ConfigError line that
names the key. Never another exception (a traceback for the user), never a multi-line message."""
from __future__ import annotations

import functools
import time

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from omegaconf import OmegaConf

from distillscape.config import JOBS, ConfigError, settings
from distillscape.tasks.common import CONF_DIR, compose_task

# what each task needs on the command line before anything else can be checked
REQUIRED = {"landscape": ["distilled=x"], "landing": ["distilled=x"], "instances": ["distilled=x"],
            "report": ["runs=[x]"]}
BAD_VALUES = ["abc", "-1", "0", "-1e9", "nan", "inf", "-inf", "1e300", "1000000000000", "null", "true",
              "[1,2]", "{a: 1}", "''", "3.5", "-0.5"]


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        yield prefix[:-1]  # a list is set as a whole
    else:
        yield prefix[:-1]


def _keys() -> list[tuple[str, str]]:
    keys = []
    for task in JOBS:
        cfg = compose_task(task, ["paths.output_dir=/nonexistent/out", *REQUIRED.get(task, [])])
        data = OmegaConf.to_container(cfg, resolve=False)
        keys += [(task, k) for k in _leaves(data) if not k.startswith(("hydra", "task_name"))
                 and not k.endswith("._target_")]
    return keys


@pytest.fixture(scope="module", autouse=True)
def hydra_once():
    """Hydra initialised once for the module: each check then composes as a running app does (the study)."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield


KEYS = _keys()


def _typo(key: str, i: int) -> str:
    *parents, leaf = key.split(".")
    if len(leaf) < 3:
        leaf = leaf + "x"
    else:
        j = 1 + i % (len(leaf) - 2)
        leaf = leaf[:j] + leaf[j + 1] + leaf[j] + leaf[j + 2:]  # two letters swapped
    return ".".join([*parents, leaf])


def check(task: str, override: str, key: str) -> str:
    """'ok' or the refusal line; fails the test on anything else."""
    t0 = time.perf_counter()
    try:
        settings(compose_task(task, ["paths.output_dir=/nonexistent/out", *REQUIRED.get(task, []), override]))
        outcome = "ok"
    except ConfigError as e:
        outcome = str(e)
        assert "\n" not in outcome.strip(), outcome
        leaf = key.split(".")[-1]
        assert key in outcome or leaf in outcome, f"{override}: the message does not name the key: {outcome}"
    assert time.perf_counter() - t0 < 10, f"{override} took {time.perf_counter() - t0:.1f} s to check"
    return outcome


def test_every_task_has_keys_to_try():
    assert {t for t, _ in KEYS} == set(JOBS) and len(KEYS) > 100


def _bad_value(task_key, value):
    task, key = task_key
    check(task, f"{key}={value}", key)


# a sample in the default run; every pair (about 16 values x 400 keys) in the slow one
test_bad_value_of_any_key_runs_or_names_the_key = hsettings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
    given(st.sampled_from(KEYS), st.sampled_from(BAD_VALUES))(_bad_value))
test_bad_value_of_any_key_thorough = pytest.mark.slow(hsettings(
    max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
    given(st.sampled_from(KEYS), st.sampled_from(BAD_VALUES))(_bad_value)))


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KEYS), st.integers(0, 50))
def test_mistyped_key_is_refused_naming_it(task_key, i):
    task, key = task_key
    wrong = _typo(key, i)
    if wrong == key or any(k == wrong for t, k in KEYS if t == task):
        return
    outcome = check(task, f"{wrong}=1", wrong)
    assert outcome != "ok", f"{wrong}=1 was accepted"


@pytest.mark.parametrize("override,needle", [
    ("distill.lr_init=nan", "distill.lr_init=nan must be a finite number"),
    ("distill.lr_init=inf", "distill.lr_init=inf must be a finite number"),
    ("trainer.max_steps=-5", "trainer.max_steps=-5 must be >= 1"),
    ("seed=-1", "seed=-1 must be an integer in [0, 4294967295]"),
    ("distill.eval_inits=1000000000000", "distill.eval_inits"),
    # found by the thorough run: Hydra and OmegaConf failed on these with an AttributeError / TypeError
    ("env={a: 1}", "env={a: 1}: a config group takes the name of one of its options"),
    ("env=[1,2]", "env=[1,2]: a config group takes the name of one of its options"),
    ("logger=-1", "logger=-1: a config group takes the name of one of its options"),
    ("env=nan", "env=nan: a config group takes the name of one of its options"),
])
def test_known_bad_values(override, needle):
    with pytest.raises(ConfigError) as e:
        settings(compose_task("distill", ["paths.output_dir=/nonexistent/out", override]))
    assert needle in str(e.value)


# -- whose a directory is: a job's record against any other job's config --------------------------------------------
# valid changes of a config, each a list of overrides: for every task, and each task's own
LOGGERS = [["logger=none"], ["logger=csv"]]  # every task's but the study's (study.logger)
CHANGES = {"*": [[], ["seed=1"], ["paths.data_dir=/elsewhere"], ["skip_complete=true"]],
           "distill": [["arch=lenet"], ["distill.steps=7"], ["ckpt_path=last"], ["distill.inner_steps=2"], ["env=cartpole"]],
           "train": [["arch=lenet"], ["direct.epochs=2"]],
           "landscape": [["num_shards=3", "shard=1"], ["num_shards=3", "shard=2"], ["num_shards=2"],
                         ["sweep.resolution=[3,3]"], ["landscape.out_dir=/elsewhere/surfaces"]],
           "landing": [["analysis.inits=3"], ["distilled=y"]], "instances": [["instances.models=3"]],
           "report": [["report.title=x"], ["runs=[y]"]], "study": [["study.force=true"], ["study.arch=lenet"]]}


@functools.lru_cache(maxsize=None)
def _job(task: str, change: tuple[str, ...], out: str):
    """The config of a job (composed once per session: composing takes most of an example's time)."""
    return compose_task(task, [f"paths.output_dir={out}", *REQUIRED.get(task, []), *change])


def _same_job(a, b) -> bool:
    """The oracle: the fingerprint of the identity that marks a finished job (resume.config_digest), with the
    shard left out (the shards of one sweep share a directory by design)."""
    from distillscape.job import Job
    from distillscape.resume import ADDED_SETTINGS, SHARED_BY, fingerprint, identity

    def digest(cfg):
        data = identity(Job.of(cfg), known=len(ADDED_SETTINGS))
        for key in SHARED_BY.get(str(cfg.task_name), ()):
            data.pop(key, None)
        return fingerprint(data=data)
    return digest(a) == digest(b)


for _task in JOBS:
    CHANGES[_task] += LOGGERS if _task != "study" else []


def _owner_refuses(owner, intruder, data):
    """A directory with the record of a job of `owner` (resume.write_job_config): a job of `intruder` is refused
    there (one line naming the directory) exactly when it is another task, or the same task with another identity
    (a study decides per stage); never when only where or how visibly it runs changed, or the directory moved."""
    import tempfile
    from pathlib import Path

    from distillscape.job import Job
    from distillscape.resume import ANY_CONFIG, check_owner, write_job_config

    before = tuple(data.draw(st.sampled_from(CHANGES["*"] + CHANGES[owner])))
    after = tuple(data.draw(st.sampled_from(CHANGES["*"] + CHANGES[intruder])))
    with tempfile.TemporaryDirectory() as tmp:
        here, moved = Path(tmp) / "run", Path(tmp) / "moved"
        here.mkdir()
        # the configs name fixed directories (cached); the record and the checks use the real ones
        a, b = _job(owner, before, "/jobs/run"), _job(intruder, after, "/jobs/run")
        write_job_config(Job.of(a), here)
        expected = owner != intruder or (owner not in ANY_CONFIG and not _same_job(a, b))
        try:
            check_owner(Job.of(b), here)
            refused = None
        except ConfigError as e:
            refused = str(e)
            assert "\n" not in refused and str(here) in refused, refused
        assert (refused is not None) == expected, (owner, before, intruder, after, refused)
        # the same directory moved elsewhere is the same job's: its output directory, and what is resolved from it
        here.rename(moved)
        if not expected:
            check_owner(Job.of(_job(intruder, after, "/jobs/moved")), moved)


_OWNER_CASES = given(st.sampled_from(list(JOBS)), st.sampled_from(list(JOBS)), st.data())
test_a_jobs_directory_refuses_exactly_the_other_jobs = hsettings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])(_OWNER_CASES(_owner_refuses))
test_a_jobs_directory_refuses_exactly_the_other_jobs_thorough = pytest.mark.slow(hsettings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])(_OWNER_CASES(_owner_refuses)))
