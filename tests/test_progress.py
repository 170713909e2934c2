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
