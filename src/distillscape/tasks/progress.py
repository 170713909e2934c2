"""What a job says while it runs, and where it goes.

- Progress: in a terminal, one bar over all training steps ("outer steps 120/400", not Lightning's
  per-epoch "Epoch 374/-2": a distillation's epoch is one outer step); anywhere else (a SLURM .out file,
  a redirect) a plain line every N steps (or predict batches: a landscape's grid chunks) with the rate
  and the time left, instead of a bar's carriage returns.
- Messages: once the job has started (claimed its directory), our console lines also go to the
  `distillscape` logger, so Hydra's job log (<output dir>/<task>.log) holds them
  (conf/hydra/default.yaml sends that logger to the file only, the console already showed them).
- Noise: Lightning's advertising tips, its "TPU available: False" lines, its lines that repeat what we
  configured (`val_check_interval=1.0`, a fit ending at its `max_epochs` / `max_steps`), Hydra's note about
  the launcher plugins' schema matching and library deprecation warnings that the user cannot act on are
  dropped; warnings that call for action stay.
- A study's stages: a line when a stage starts and ends (with the time it took) and, where no terminal
  shows a bar, a line every `every_s` seconds in which nothing else was said (`Heartbeat`), so that a
  SLURM .out file or a redirect shows the job is alive through stages without a Trainer (the landing).
- Width: rich wraps at 80 columns when stdout is not a terminal, which cut table columns and numbers
  mid-value in redirected output; there the console is `WIDE` columns (or $COLUMNS) and never wraps a
  plain line (`console_options`).
"""
from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
import warnings

from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n

log = logging.getLogger("distillscape")
# True once the job has claimed its output directory (common.start_job): before that a run may still be
# refused, and a refused run must leave its directory as it was, job log included (Hydra opens the log
# file at its first record)
recording = False


# when this process last said something on the console (our messages, progress lines): a heartbeat is
# printed only after `every_s` seconds of silence
last_said = time.monotonic()


def said() -> None:
    global last_said
    last_said = time.monotonic()


def record(line: str, level: int = logging.INFO) -> None:
    """`line` to the job log, once the job has started."""
    if recording:
        log.log(level, line)


WIDE = 200  # columns of the console where stdout is not a terminal and $COLUMNS is unset


def console_options() -> dict:
    """rich Console settings: a terminal keeps its own width; elsewhere (a redirect, a SLURM .out file, a
    pipe) tables get WIDE columns (or $COLUMNS) instead of rich's 80 (see `soft_wrap` for plain lines)."""
    if is_terminal():
        return {}
    columns = os.environ.get("COLUMNS", "")
    return {"width": int(columns) if columns.isdigit() and int(columns) > 0 else WIDE}


def soft_wrap(objects: tuple) -> bool:
    """Whether a print of `objects` leaves line breaking to the reader: plain messages where there is no
    terminal (one message stays one line: grep finds it, no number or path is split); a table still fits
    its cells to the console's width."""
    return not is_terminal() and all(isinstance(o, str) for o in objects)

LINES = 20  # a non-terminal run prints about this many progress lines


def is_terminal() -> bool:
    return sys.stdout.isatty()


def unit(module) -> str:
    return getattr(module, "progress_unit", "steps")


def total_steps(trainer) -> int | None:
    total = trainer.estimated_stepping_batches
    return int(total) if total is not None and total != float("inf") and total > 0 else None


class StepBar(TQDMProgressBar):
    """One bar over all training steps, steps done / total, the logged metrics beside it."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=total_steps(trainer))
        bar.set_description(unit(pl_module))
        _update_n(bar, trainer.global_step)

    def on_train_epoch_start(self, trainer, *_) -> None:
        pass  # no reset per epoch: the bar counts steps over the whole fit

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = trainer.global_step
        if self.train_progress_bar is not None and self._should_update(n, self.train_progress_bar.total or 0):
            _update_n(self.train_progress_bar, n)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


def eta_text(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class ProgressLines(Callback):
    """A line every `every` training steps (default: about LINES lines per fit): steps done / total,
    percent, steps per second and the time left at that rate, and the latest scalar metrics."""

    def __init__(self, every: int | None = None, emit=None):
        self.every, self.emit = every, emit or (lambda line: print(line, flush=True))

    def _start(self, total: int | None, done: int) -> None:
        self.total = total
        self.n_every = self.every or max(1, (self.total or 200) // LINES)
        self.start_step, self.t0 = done, time.perf_counter()

    def _line(self, what: str, n: int, metrics: str = "") -> None:
        if n % self.n_every and n != self.total:
            return
        rate = (n - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)
        total = f"/{self.total} ({n / self.total:.0%})" if self.total else ""
        eta = f", {eta_text((self.total - n) / rate)} left" if self.total and rate > 0 else ""
        line = f"{what} {n}{total}: {rate:.3g}/s{eta}" + (f"; {metrics}" if metrics else "")
        self.emit(line)
        said()
        record(line)

    def on_train_start(self, trainer, pl_module) -> None:
        self._start(total_steps(trainer), trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = ", ".join(f"{k} {float(v):.4g}" for k, v in trainer.callback_metrics.items()
                            if k.startswith("train/") and getattr(v, "numel", lambda: 1)() == 1)
        self._line(unit(pl_module), trainer.global_step, metrics)

    def on_predict_start(self, trainer, pl_module) -> None:
        total = sum(int(n) for n in trainer.num_predict_batches if n != float("inf"))
        self._start(total or None, 0)
        self.predicted = 0

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.predicted += 1
        self._line(getattr(pl_module, "progress_unit", "batches"), self.predicted)


def progress_callbacks(enabled: bool) -> tuple[list[Callback], bool]:
    """The callbacks that show a fit's progress, and whether Lightning's own bar stays on (never: ours
    replace it)."""
    if not enabled:
        return [], False
    return ([StepBar()] if is_terminal() else [ProgressLines()]), is_terminal()


# -- messages and noise -----------------------------------------------------------------------------
def plain_text(*objects, markup: bool = True) -> str:
    """What rich prints for `objects`, without colours or markup (for the log file); `markup=False`: strings
    as written, as `console.print(..., markup=False)` shows them."""
    from rich.console import Console
    from rich.text import Text

    parts = []
    for o in objects:
        if isinstance(o, str):
            parts.append(Text.from_markup(o).plain if markup else o)
        else:
            buf = io.StringIO()
            Console(file=buf, width=120, color_system=None, highlight=False).print(o)
            parts.append(buf.getvalue().rstrip("\n"))
    return " ".join(parts)


NOT_ACTIONABLE = ("💡 Tip:", "TPU available:", "HPU available:", "GPU available: False",
                  # what we configured, said back: the direct baseline validates once an epoch by our choice,
                  # and a fit that ends at its planned length is followed by our own summary
                  "`Trainer(val_check_interval=", "`Trainer.fit` stopped: `max_epochs=",
                  "`Trainer.fit` stopped: `max_steps=")


class _DropNotActionable(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOT_ACTIONABLE)


def quiet_libraries() -> None:
    """Drop what a user cannot act on: Lightning's tips and CPU-only device lines, libraries'
    deprecation notes, and Lightning's hints about our own internal loaders."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropNotActionable) for f in lg.filters):
            lg.addFilter(_DropNotActionable())
    # our conf/hydra/launcher/<name>.yaml carry the launcher plugins' schemas' names (so that
    # hydra/launcher=joblib takes our defaults); Hydra 1.3 calls that a deprecated match at every composition,
    # in every joblib worker too, and there is nothing a user can change about it
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/[\w-]+' is validated against ConfigStore schema")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|lightning|wandb|hydra|omegaconf)\b")
    warnings.filterwarnings("ignore", message=r".*is deprecated.*")  # LightningDeprecationWarning and kin
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
    warnings.filterwarnings("ignore", message=r".*does not have many workers which may be a bottleneck.*")
    warnings.filterwarnings("ignore", message=r".*srun.*command is available on your system.*")
    # a resume keeps the CSV history (resume.keep_csv_history re-writes it), so "will be deleted" is not true here
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    # an RL distillation (manual optimisation) checkpoints the state after its step, which is what it resumes from
    warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization")


# -- a study's stages ---------------------------------------------------------------------------------------
class Heartbeat:
    """While a stage runs (`with Heartbeat(...)`): `emit` a line every `every_s` seconds in which nothing else
    was said (`said`), with the stage's elapsed time, from a daemon thread. Nothing is printed in a terminal,
    where Lightning's bar moves, nor when every_s <= 0."""

    def __init__(self, what: str, every_s: float, emit, terminal: bool | None = None):
        self.what, self.every_s, self.emit = what, float(every_s), emit
        self.on = self.every_s > 0 and not (is_terminal() if terminal is None else terminal)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        self.t0 = time.monotonic()
        if self.on:
            self._thread = threading.Thread(target=self._beat, name="distillscape-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(min(self.every_s, 1.0)):
            now = time.monotonic()
            if now - max(last_said, self.t0) >= self.every_s:
                line = f"{self.what}: still running, {eta_text(now - self.t0)} so far"
                self.emit(line)
                said()
                record(line)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
