"""What a job says while it runs: a progress line every N steps with rate and time left where there is
no terminal, one bar over all steps (not per epoch) where there is, our messages in Hydra's job log,
and no Lightning tips."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from distillscape.tasks.progress import ProgressLines, StepBar, eta_text, plain_text

SRC = Path(__file__).resolve().parents[1] / "src"


class OneBatchEpochs(BoringModel):
    """Like a distillation: every epoch is one step, the fit is bounded by max_steps."""
    progress_unit = "outer steps"

    def train_dataloader(self):
        from torch.utils.data import DataLoader
        from lightning.pytorch.demos.boring_classes import RandomDataset

        return DataLoader(RandomDataset(32, 1), batch_size=1)


def fit(callbacks, max_steps=12, bar=False):
    trainer = L.Trainer(max_steps=max_steps, callbacks=callbacks, enable_progress_bar=bar, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, accelerator="cpu")
    trainer.fit(OneBatchEpochs())
    return trainer


def test_progress_lines_count_steps_over_the_whole_fit_with_rate_and_eta():
    lines: list[str] = []
    fit([ProgressLines(every=4, emit=lines.append)], max_steps=12)
    assert [line.split(":")[0] for line in lines] == ["outer steps 4/12 (33%)", "outer steps 8/12 (67%)",
                                                      "outer steps 12/12 (100%)"]
    assert all(re.search(r": [\d.e+-]+/s, \d+s left", line) for line in lines), lines
    assert lines[-1].split(",")[1].strip() == "0s left"


def test_the_bar_counts_outer_steps_done_of_total_not_epochs():
    bar = StepBar()
    fit([bar], max_steps=7, bar=True)
    assert bar.train_progress_bar.total == 7 and bar.train_progress_bar.n == 7
    assert bar.train_progress_bar.desc.startswith("outer steps")


def test_eta_and_plain_text():
    assert (eta_text(5), eta_text(65), eta_text(3725)) == ("5s", "1m05s", "1h02m")
    from rich.table import Table

    t = Table("a", "b")
    t.add_row("1", "2")
    text = plain_text("[bold]done[/bold]", t)
    assert text.startswith("done ") and "┃ a ┃ b ┃" in text and "│ 1 │ 2 │" in text
    assert "[bold]" not in text and "\x1b[" not in text
    # a sentence naming a setting in brackets, printed with markup off, keeps its brackets on screen and in the log
    sentence = "Reading: inconclusive — no controls (analysis.early=[controls])."
    assert plain_text(sentence, markup=False) == sentence
    assert "[controls]" not in plain_text(sentence)  # what rich makes of it as markup: the reason for markup=False
    from distillscape.tasks.common import console

    with console.capture() as cap:
        console.print(sentence, markup=False)
    assert "analysis.early=[controls]" in cap.get()


def test_job_log_holds_our_messages_and_no_lightning_tips(tmp_path):
    """A real app run by Hydra with its output redirected (as under SLURM): the job log (<task>.log)
    holds what the console showed."""
    run = tmp_path / "landing"
    run.mkdir()
    (run / "landing_stats.json").write_text(json.dumps({"kinds": {"distilled": {"x": {"mean": 1.0, "std": 0.0, "n": 2}}}}))
    out = tmp_path / "rep"
    proc = subprocess.run([sys.executable, "-c", "from distillscape.tasks.report import main; main()",
                           f"runs=[{run}]", f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (out / "report.log").read_text()
    assert "report: " in proc.stdout and re.search(r"\[distillscape\]\[INFO\] - report: .*report\.html", log), log
    assert "Tip:" not in proc.stdout + proc.stderr


def test_progress_lines_count_predict_batches():
    """A landscape sweep's grid chunks are predict batches: lines count them against their total."""
    lines: list[str] = []

    class Chunks(BoringModel):
        progress_unit = "grid chunks"

    trainer = L.Trainer(callbacks=[ProgressLines(every=2, emit=lines.append)], enable_progress_bar=False,
                        logger=False, accelerator="cpu")
    from torch.utils.data import DataLoader
    from lightning.pytorch.demos.boring_classes import RandomDataset

    trainer.predict(Chunks(), DataLoader(RandomDataset(32, 5), batch_size=1))
    assert [line.split(":")[0] for line in lines] == ["grid chunks 2/5 (40%)", "grid chunks 4/5 (80%)",
                                                      "grid chunks 5/5 (100%)"]


def _run_python(code: str, *args: str, env_drop: tuple[str, ...] = ("COLUMNS",)) -> subprocess.CompletedProcess:
    """`code` (or a module's args) in a fresh interpreter with stdout and stderr piped, as under SLURM or a redirect."""
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    cmd = [sys.executable, "-c", code] if code else [sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_redirected_output_is_not_cut_to_80_columns():
    """Without a terminal rich used 80 columns: table names cut to 'random_synthet…', numbers and paths
    broken over lines. A pipe now gets a wide table and every message on one line."""
    code = """
from rich.table import Table
from distillscape.tasks.common import console
t = Table(title="landings")
for name in ["statistic", "n", "distilled lr 0.0532", "random_real lr 1", "random_synthetic lr 0.0532"]:
    t.add_column(name)
t.add_row("polish_distance_ratio", "2", "0.08082 ± 0.005912", "0.6242 ± 0.1071", "0.03202 ± 0.005853")
console.print(t)
console.print("report: /" + "a_long_directory/" * 8 + "report.html (5.4 MB, 10 figures, 157 metrics from 4 runs)")
"""
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "…" not in out.stdout, out.stdout
    assert any("random_synthetic lr 0.0532" in line for line in lines), out.stdout
    assert any("0.03202 ± 0.005853" in line for line in lines), out.stdout
    assert [line for line in lines if line.startswith("report: ")] == \
        ["report: /" + "a_long_directory/" * 8 + "report.html (5.4 MB, 10 figures, 157 metrics from 4 runs)"]
    # $COLUMNS, where the user set it, wins
    narrow = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "60", "PYTHONPATH": str(SRC)})
    assert max(len(line) for line in narrow.stdout.splitlines() if "│" in line) <= 60


def test_heartbeat_speaks_only_after_silence_and_never_in_a_terminal():
    import time

    from distillscape.tasks.progress import Heartbeat, said

    lines: list[str] = []
    with Heartbeat("[study] landing", 0.3, lines.append, terminal=False):
        time.sleep(1.2)
    assert len(lines) >= 2 and all(re.fullmatch(r"\[study\] landing: still running, \d+s so far", x) for x in lines), lines
    busy: list[str] = []
    with Heartbeat("[study] landing", 0.5, busy.append, terminal=False):
        for _ in range(20):  # progress lines every 0.05 s: nothing to add
            said()
            time.sleep(0.05)
    assert busy == []
    quiet: list[str] = []
    with Heartbeat("x", 0.1, quiet.append, terminal=True):  # a terminal shows Lightning's bar instead
        time.sleep(0.4)
    with Heartbeat("x", 0, quiet.append, terminal=False):  # study.progress_every_s=0: no heartbeat
        time.sleep(0.3)
    assert quiet == []


def test_lightning_lines_that_repeat_our_settings_are_dropped(capfd, caplog):
    """`Trainer(val_check_interval=1.0)` was configured so ... and `Trainer.fit` stopped: `max_epochs=1`
    reached. say back what we set; they were printed by every direct baseline."""
    import logging

    from distillscape.tasks.progress import quiet_libraries

    quiet_libraries()
    caplog.set_level(logging.INFO)
    trainer = L.Trainer(max_epochs=1, val_check_interval=1.0, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, accelerator="cpu",
                        limit_train_batches=2, limit_val_batches=1)
    trainer.fit(BoringModel())
    said = capfd.readouterr()
    text = said.out + said.err + caplog.text
    assert trainer.current_epoch == 1  # the fit ran to its max_epochs, whose line Lightning would print
    assert "val_check_interval" not in text and "max_epochs=1" not in text, text


def test_hydra_launcher_deprecation_is_not_printed():
    """conf/hydra/launcher/joblib.yaml shares the plugin schema's name: Hydra 1.3 printed a 4-line
    deprecation note for it at every composition (3 times per multirun, and once in every joblib worker)."""
    out = _run_python("", "-m", "distillscape.tasks.train", "hydra/launcher=joblib", "--cfg", "hydra")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "JoblibLauncher" in out.stdout  # the launcher config was composed
    assert "validated against ConfigStore schema" not in out.stdout + out.stderr, out.stderr
