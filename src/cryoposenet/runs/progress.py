"""Progress of a training run: the metrics file, the progress bar, checkpoints and stop signals."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path

import torch

from ..errors import CryoPoseNetError, TrainingDiverged
from ..io.atomic import write_text_atomic
from ..training.checkpoint import save_checkpoint
from ..training.train import TrainState

__all__ = ["METRIC_COLUMNS", "MetricsLog", "Progress", "stop_on_signals"]

METRIC_COLUMNS = (
    "step",
    "loss",
    "time_s",
    "images_per_s",
    "k_max",
    "search_gap_deg",
    "fsc05_A",
    "fsc0143_A",
    "pose_mae_deg",
    "pose_median_deg",
    "pose_mae_sym_deg",
    "pose_median_sym_deg",
    "encoder_pose_mae_deg",  # while the run searches: the encoder's own poses (pose_*: the search's)
    "encoder_pose_median_deg",
    "encoder_pose_mae_sym_deg",
    "encoder_pose_median_sym_deg",
    "views_top5_share",  # the scored poses' share in the most populated 5 % of viewing directions
    "views_min_moment",  # smallest eigenvalue of their directions' second moment (1/3 uniform)
)


class MetricsLog:
    """``metrics.csv``: one row per step, appended and flushed; a resumed run drops rows past its step."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            lines = path.read_text().splitlines()
            keep = [ln for ln in lines[1:] if ln and int(ln.split(",")[0]) <= resume_step]
            # Today's header: columns are only ever appended, so an older run's rows still line up.
            write_text_atomic(path, "\n".join([",".join(METRIC_COLUMNS), *keep]) + "\n")
        else:
            write_text_atomic(path, ",".join(METRIC_COLUMNS) + "\n")
        self._file = open(path, "a")  # noqa: SIM115 (kept open for the whole run)

    def write(self, row: dict) -> None:
        cells = [row.get(c) for c in METRIC_COLUMNS]
        self._file.write(
            ",".join("" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in cells)
            + "\n"
        )
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Progress:
    """Per-step hook: tqdm bar with loss and images/s, metrics rows, periodic checkpoints.

    A step's row is held until the next step so an evaluation of that step lands in the same row.
    """

    def __init__(
        self,
        out: Path,
        state: TrainState | None,
        total: int,
        log_rows: MetricsLog,
        checkpoint_every: int | None,
        checkpoint_seconds: float,
        show: bool,
        eval_every: int = 0,
    ):
        from tqdm import tqdm

        start = state.step if state is not None else 0
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not show)
        self.out, self.rows, self.every, self.seconds = out, log_rows, checkpoint_every, checkpoint_seconds
        self.t0 = time.perf_counter() - (state.extra.get("time_s", 0.0) if state is not None else 0.0)
        self.last_save = time.perf_counter()
        self.row: dict | None = None
        self.last_eval: dict = {}
        self.rate: float | None = None
        self.stop_signal: str | None = None
        self.eval_every = eval_every
        self.save_after_eval = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def flush(self) -> None:
        if self.row is not None:
            self.rows.write(self.row)
            self.row = None

    def on_step(self, info, state: TrainState) -> None:
        if not math.isfinite(info.loss):
            raise TrainingDiverged(
                f"loss became {info.loss} at step {info.step}; the last good checkpoint "
                f"in {self.out} is kept (try a lower --lr, then --resume)"
            )
        self.flush()
        self.row = {
            "step": info.step,
            "loss": info.loss,
            "time_s": self.elapsed(),
            "images_per_s": info.images_per_s,
            "k_max": info.k_max,
            "search_gap_deg": info.search_gap_deg,
        }
        self.rate = info.images_per_s if self.rate is None else 0.95 * self.rate + 0.05 * info.images_per_s
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{info.loss:.4f}", img_s=f"{self.rate:.0f}", refresh=False)
        due = (self.every and info.step % self.every == 0) or (
            not self.every and time.perf_counter() - self.last_save > self.seconds
        )
        if due and not self.stop_signal and self.eval_every and info.step % self.eval_every == 0:
            self.save_after_eval = True  # saving flushes the row: first let this step's evaluation in
        elif due or self.stop_signal:
            self.save(state)
        if self.stop_signal:
            raise CryoPoseNetError(
                f"stopped by {self.stop_signal} at step {info.step}; checkpoint saved, continue with --resume"
            )

    def on_eval(self, figures: dict, state: TrainState | None = None) -> None:
        self.last_eval = figures
        if self.row is not None:
            self.row.update(figures)
        if self.save_after_eval and state is not None:
            self.save_after_eval = False
            self.save(state)

    def save(self, state: TrainState, final_map: torch.Tensor | None = None) -> None:
        """Checkpoint (with the run's ``final_map`` once it is made), and flush the metrics so the
        file never runs ahead of or behind it."""
        self.flush()
        if not all(torch.isfinite(p).all() for p in _parameters(state)):
            raise TrainingDiverged(
                f"the map or encoder became NaN/Inf by step {state.step}; the last good "
                f"checkpoint in {self.out} is kept (try a lower --lr, then --resume)"
            )
        save_checkpoint(self.out / "checkpoint.pt", state, {"time_s": self.elapsed()}, final_map)
        self.last_save = time.perf_counter()


def _parameters(state: TrainState) -> list[torch.Tensor]:
    params = list(state.volume.parameters())
    if state.encoder is not None:
        params += list(state.encoder.parameters())
    if state.free_params is not None:
        params.append(state.free_params)
    return params


@contextlib.contextmanager
def stop_on_signals(hook: Progress):
    """SIGTERM and SIGINT ask the run to checkpoint and stop at the end of the current step."""

    def ask(signum, _frame):
        hook.stop_signal = signal.Signals(signum).name

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, ask)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
