"""The `distillscape-<task>` console scripts.

Importing a task takes seconds (torch, Lightning, Hydra), and until the task's own entry installs its stop
handlers (`common.console_script`) a SIGTERM killed the process without a word and a Ctrl-C printed a long
import traceback. So each script installs a small handler first, imports its task, and hands over: a stop
while starting is one line too. Nothing is computed or written before the hand-over, so nothing is lost."""
from __future__ import annotations

import importlib
import os
import signal
import sys


def _stopped_while_starting(signum, frame) -> None:
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    sys.stderr.write(f"distillscape: stopped by {name} while starting, before any work: nothing was computed "
                     f"or written; run the same command again\n")
    sys.stderr.flush()
    os._exit(128 + signum)  # the status a shell gives a process that a signal ended: 143, or 130 for Ctrl-C


def run(task: str) -> None:
    """The task's console script; also what `python -m distillscape.tasks.<task>` runs. There the task's file
    is `__main__`, and a launcher that ships the task to its workers (submitit, joblib) would pickle that copy's
    functions by value, with every global they reach, some of which cannot be pickled (a @contextmanager's
    generator, torch.classes): "cannot pickle 'generator' object" at submission. The module imported under its
    own name is pickled by reference, as for the console script."""
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, _stopped_while_starting) for s in stops}
    module = importlib.import_module(f"distillscape.tasks.{task}")
    for s, handler in previous.items():  # the task's entry installs its own at once
        signal.signal(s, handler)
    module.cli()


def distill() -> None:
    run("distill")


def train() -> None:
    run("train")


def landscape() -> None:
    run("landscape")


def landing() -> None:
    run("landing")


def instances() -> None:
    run("instances")


def report() -> None:
    run("report")


def study() -> None:
    run("study")
