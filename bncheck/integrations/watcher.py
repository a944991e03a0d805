"""The core the three training integrations share: when to check, how to run one, what it found.

A check is :func:`bncheck.compare` on a private copy of the model and a fixed held-out set. The
integration supplies how to make that copy and run compare (``run``); this module times it, keeps
every RNG state as it was, remembers the verdicts, says on the console when the verdict turns to
mismatch, and decides when the next check is due.

The default interval is a time budget, not a count: a check runs when the time spent checking,
with the next check's estimated cost, stays within ``budget`` (3%) of the time spent training.
Short epochs get a check every few epochs, long ones every epoch, and the cost stays under 5% of
training whatever the model (bench/run.py measures it).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from bncheck.errors import BncheckError
from bncheck.integrations.rng import preserved_rng

LOG = logging.getLogger("bncheck")
# The share of training time checks may take at the default interval, and the most the last
# check at the end of training may bring them to (the promise: under 5%).
DEFAULT_BUDGET = 0.03
END_CEILING = 0.05
# Held-out samples per check: four reference batches at a training batch size up to 32.
DEFAULT_SAMPLES = 128
# A check's forward passes over the held-out set: the reference at the training batch size, and
# up to five more (eval with taps, noise floor and, on a mismatch, candidates) at compare's batch
# size. The first check's cost is estimated from timed passes over a slice of the held-out set
# (at batch size 1 a whole pass would cost most of a check: 1.0 s against 1.5 s on the U-Net).
PASSES_PER_CHECK = 6
PROBE_BATCHES, PROBE_SAMPLES = 2, 16


class Subject(Protocol):
    """What an integration checks: its model, copied privately, and the held-out set."""

    samples: int
    train_batch_size: int | None
    batch_size: int

    def compare(self) -> Mapping[str, Any]:
        """compare's JSON document for the model as it is now."""

    def one_pass(self, samples: int, batch_size: int) -> None:
        """One eval-mode forward pass over the first ``samples`` held-out samples (to time
        it)."""


class FailOn(StrEnum):
    """Which verdict stops training."""

    NEVER = "never"
    MISMATCH = "mismatch"
    INCONCLUSIVE = "inconclusive"  # mismatch or inconclusive: anything but ok


@dataclass(frozen=True)
class Check:
    """One check's answer, in the figures a training log wants."""

    at: str
    verdict: str
    gap: float
    tolerance: float
    first_failing_layer: str | None
    fix: str
    conditional: str
    reason: str
    seconds: float

    @classmethod
    def of(cls, at: str, doc: Mapping[str, Any], seconds: float) -> Check:
        """From compare's JSON document (the stable contract)."""
        return cls(at, doc["verdict"], float(doc["candidates"]["eval"]["mean"]),
                   float(doc["tolerance"]), doc["first_failing_layer"],
                   doc["recommendation"]["mode"], doc["recommendation"]["conditional"]["mode"],
                   doc["recommendation"]["reason"], seconds)

    def metrics(self) -> dict[str, float]:
        """What the framework's logger records: the eval-vs-train gap (relative L2 of eval
        mode's output from the trained behaviour), its tolerance, and 1.0 on a mismatch."""
        return {"bncheck/eval_gap": self.gap, "bncheck/tolerance": self.tolerance,
                "bncheck/mismatch": float(self.verdict == "mismatch")}

    def line(self) -> str:
        """The console line for a mismatch."""
        layer = f", first failing layer {self.first_failing_layer}" if \
            self.first_failing_layer else ""
        if self.fix != "none":
            fix = f"; fix: {_rewrite(self.fix)}"
        elif self.conditional != "none":
            fix = (f"; the held-out data do not match the running statistics: if they are what "
                   f"the model will see, {_rewrite(self.conditional)}")
        else:
            fix = "; no rewrite restores it"
        return (f"bncheck: {self.at}: eval mode is {self.gap:.3f} from the trained behaviour "
                f"(tolerance {self.tolerance:.3f}){layer}{fix}")


class Watcher:
    """When to check, and the record of every check.

    ``every`` counts the integration's units (epochs or steps); None is the time budget.
    """

    def __init__(self, *, every: int | None, budget: float = DEFAULT_BUDGET,
                 fail_on: FailOn | str = FailOn.NEVER, unit: str = "epoch") -> None:
        if every is not None and every < 1:
            raise BncheckError(f"every={every}: give a positive number of {unit}s, or None for "
                               f"the time budget")
        if not 0 < budget < 1:
            raise BncheckError(f"budget={budget}: give the share of training time checks may "
                               "take, between 0 and 1 (0.03 is 3%)")
        try:
            self.fail_on = FailOn(fail_on)
        except ValueError:
            raise BncheckError(f"fail_on={fail_on!r}: give one of "
                               f"{', '.join(f.value for f in FailOn)}") from None
        self.every = every
        self.budget = budget
        self.unit = unit
        self.checks: list[Check] = []
        self.spent = 0.0
        self.estimate: float | None = None
        self._started: float | None = None
        self._units_since = 0

    def start(self) -> None:
        """Training starts (or resumes): its clock runs from here."""
        if self._started is None:
            self._started = time.perf_counter()

    def training_seconds(self) -> float:
        """Time spent training since start, checks excluded."""
        if self._started is None:
            return 0.0
        return time.perf_counter() - self._started - self.spent

    def after_unit(self, subject: Subject, at: str) -> Check | None:
        """One more epoch or step of training is done: check now if one is due."""
        self.start()
        self._units_since += 1
        if self.every is not None:
            due = self._units_since >= self.every
        else:
            if self.estimate is None:
                self._probe(subject)
            due = self._fits()
        return self.check(subject, at) if due else None

    def at_end(self, subject: Subject, at: str) -> Check | None:
        """Training ended: a last check if training moved on since the last one and the
        interval allows it; at the default interval, if none ran, one that keeps the checks
        under 5% of the training time, else a line saying why there was none."""
        if self._units_since == 0:
            return None
        if self.every is not None:
            due = self._units_since >= self.every or not self.checks
        elif self.checks:
            due = self._fits()
        else:
            if self.estimate is None:
                self._probe(subject)
            assert self.estimate is not None
            due = self.spent + self.estimate <= END_CEILING * self.training_seconds()
            if not due:
                LOG.warning(f"bncheck: no check ran: one takes about {self.estimate:.1f} s, "
                            f"more than {END_CEILING:.0%} of these "
                            f"{self.training_seconds():.0f} s of training; give an interval "
                            "(every_n_epochs=, every=) or run bncheck compare on the saved model")
        return self.check(subject, at) if due else None

    def check(self, subject: Subject, at: str) -> Check:
        """Run one check, log it, record it."""
        t = time.perf_counter()
        with preserved_rng():
            doc = subject.compare()
        seconds = time.perf_counter() - t
        self.spent += seconds
        self._units_since = 0
        result = Check.of(at, doc, seconds)
        previous = self.checks[-1].verdict if self.checks else None
        self.checks.append(result)
        self.estimate = statistics.median(c.seconds for c in self.checks)
        if result.verdict == "mismatch" and previous != "mismatch":
            LOG.warning(result.line())
        return result

    def _probe(self, subject: Subject) -> None:
        """The first check's cost, estimated from two timed passes over a slice of the
        held-out set (two batches): one at the training batch size, scaled to the whole set,
        and one at compare's batch size, scaled to the whole set and the other passes."""
        n = subject.samples
        self.estimate = 0.0
        for b, passes in ((subject.train_batch_size or subject.batch_size, 1),
                          (subject.batch_size, PASSES_PER_CHECK - 1)):
            k = min(n, max(PROBE_BATCHES * b, PROBE_SAMPLES))
            t = time.perf_counter()
            with preserved_rng():
                subject.one_pass(k, b)
            seconds = time.perf_counter() - t
            self.spent += seconds
            self.estimate += passes * seconds * n / k

    def _fits(self) -> bool:
        assert self.estimate is not None
        return self.spent + self.estimate <= self.budget * self.training_seconds()

    @property
    def should_stop(self) -> bool:
        """The last verdict is one ``fail_on`` stops training for."""
        if not self.checks or self.fail_on is FailOn.NEVER:
            return False
        verdict = self.checks[-1].verdict
        return verdict == "mismatch" or (self.fail_on is FailOn.INCONCLUSIVE and verdict != "ok")


def _rewrite(mode: str) -> str:
    return f"bncheck.rewrite(model, \"{mode}\", data=...) or bncheck rewrite --mode {mode}"
