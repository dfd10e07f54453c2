"""The wall-clock budget: one promise for the whole command, trials, retries, the final test
evaluation and export included."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..errors import UserError

#: what a search gets when neither --budget nor --n-trials is given
DEFAULT_BUDGET_S = 600.0
#: the most of the whole budget one trial may take: a search is several trials, not one bet
TRIAL_SHARE = 0.4
#: predictions are planned against this much of the time allowed, for their error
SAFETY = 0.8
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def kept_budget(budget: float | None, n_trials: int | None) -> float | None:
    """The budget a search keeps: the one given, else the default when no --n-trials ends it."""
    return DEFAULT_BUDGET_S if budget is None and n_trials is None else budget


def parse_duration(value, option: str = "--budget") -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``2h``, ``1h30m`` or a number; a one-line error otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            match = _DURATION.match(text)
            if not text or match is None or not any(match.groups()):
                raise UserError(
                    f"{option} {value}: not a duration; write it like 90s, 10m, 2h or 1h30m"
                ) from None
            seconds = sum(float(n) * unit for n, unit in zip(match.groups(), (3600, 60, 1)) if n)
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise UserError(f"{option} {value}: give a duration above zero, like 90s, 10m or 2h")
    return seconds


def grace(budget: float) -> float:
    """How far past its budget a command may end: max(5%, 15 s)."""
    return max(0.05 * budget, 15.0)


def clock_text(seconds: float) -> str:
    seconds = int(max(0, round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Clock:
    """The budget of one command. ``started`` is wall-clock time (``time.time()``), so worker
    processes share their parent's deadline. ``reserve`` is kept back for the final test evaluation
    and export; trials get the rest."""

    budget: float | None
    started: float
    reserve: float = 0.0

    @classmethod
    def start(cls, budget: float | None, started: float | None = None) -> Clock:
        return cls(budget=budget, started=time.time() if started is None else started)

    def elapsed(self) -> float:
        return time.time() - self.started

    def left(self) -> float:
        """Seconds until the whole budget is spent (inf without one)."""
        return float("inf") if self.budget is None else self.budget - self.elapsed()

    def trials_left(self) -> float:
        """Seconds trials may still use: what is left, less the export's reserve."""
        return self.left() - self.reserve

    def trial_deadline(self) -> float | None:
        """Wall-clock time at which running trials must stop (None without a budget)."""
        return None if self.budget is None else self.started + self.budget - self.reserve


def process_started() -> float:
    """When this process started (wall-clock), so a command's budget covers its own start-up: from
    /proc on Linux, else now. A process older than half a minute is not a command just started (the
    command line run inside a notebook or a test harness): now."""

    import os

    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as machine:
            boot = next(int(line.split()[1]) for line in machine if line.startswith("btime"))
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
        return started if 0 <= time.time() - started < 30 else time.time()

    except (OSError, ValueError, StopIteration, IndexError):
        return time.time()


def stopped_phrase(stopped: str) -> str:
    """What a trial's ``stopped`` attribute ("budget", "the reference's cap") reads as in a sentence."""
    return "the budget" if stopped == "budget" else stopped
