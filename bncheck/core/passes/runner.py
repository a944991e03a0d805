"""Passes over the samples: batches through a model, outputs parked on disk, taps merged.

With several processes each rank runs its share of the batches, then the outputs and the tap
moments are exchanged, so every rank ends a pass holding what one process would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Protocol

import numpy as np

from bncheck.core.distributed.collective import Alone, Collective
from bncheck.core.inputs.data import SampleSource
from bncheck.core.network.model import Model
from bncheck.core.passes.outputs import OutputStore
from bncheck.core.passes.progress import Progress
from bncheck.core.stats.taps import TapCollector
from bncheck.errors import BncheckError

# Batches exchanged at a time under torchrun: bounds what a rank holds of the others' results.
WINDOW = 64
# Loads the given index batches of a source, possibly in worker processes (--workers).
Loader = Callable[[SampleSource, list[np.ndarray]], Iterator[tuple[np.ndarray, list[np.ndarray]]]]


class StopRule(Protocol):
    """Asked at fixed batch counts whether the rest of a pass can be skipped."""

    def checkpoints(self, batches: int) -> list[int]:
        """The batch counts, below ``batches``, after which to ask."""
        ...

    def __call__(self, store: OutputStore, done: list[np.ndarray], batches: int) -> bool:
        """True to stop, given the outputs so far, the index batches run, and how many the
        whole pass has."""
        ...


class TapRule(Protocol):
    """Asked at fixed batch counts whether the rest of a pass may run untapped."""

    def checkpoints(self, batches: int) -> list[int]:
        """The batch counts, below ``batches``, after which to ask."""
        ...

    def __call__(self, taps: TapCollector, batches_done: int) -> bool:
        """True to end the taps, given what the first ``batches_done`` batches gave them."""
        ...


def serial_loader(src: SampleSource, chunks: list[np.ndarray]
                  ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Load each batch in this process."""
    for idx in chunks:
        yield idx, src.load(idx)


class Runner:
    """Streams samples through models; counts forward passes."""

    def __init__(self, src: SampleSource, progress: Progress,
                 collective: Collective | None = None, loader: Loader = serial_loader) -> None:
        self.src = src
        self.progress = progress
        self.collective = collective or Alone()
        self.loader = loader
        self.passes = 0

    def run(self, model: Model, label: str, batch_size: int, order: np.ndarray, *,
            taps: list[str] | None = None, on_tap: TapCollector | None = None,
            keep_outputs: bool = True, stop: StopRule | None = None,
            stop_after: int | None = None, tap_rule: TapRule | None = None) -> OutputStore:
        """Run the samples ``order`` in that order, in batches; outputs stored by sample index.

        ``stop`` may end the pass early, at one of its checkpoints, and ``tap_rule`` its taps
        (the rest runs untapped): both at the same batch counts with one process or several,
        so sharding never changes where a pass stops or stops tapping. ``stop_after`` ends each
        forward once the first that many taps are summarized (``Model.run``); such a pass keeps
        no outputs.
        """
        assert stop_after is None or not keep_outputs, "a cut-short forward has no outputs"
        store = OutputStore(len(self.src))
        self.passes += 1
        chunks = [order[s:s + batch_size] for s in range(0, order.size, batch_size)]
        asks = set(stop.checkpoints(len(chunks))) if stop is not None else set()
        rule = tap_rule if on_tap is not None else None
        tap_asks = set(rule.checkpoints(len(chunks))) if rule is not None else set()
        args = (model, label, chunks, taps, on_tap, store, keep_outputs, stop, asks, stop_after,
                _Tapping(on_tap, rule, tap_asks))
        if self.collective.world == 1:
            self._local(*args)
        else:
            self._shared(*args)
        return store

    def _local(self, model: Model, label: str, chunks: list[np.ndarray], taps: list[str] | None,
               on_tap: TapCollector | None, store: OutputStore, keep_outputs: bool,
               stop: StopRule | None, asks: set[int], stop_after: int | None,
               tapping: _Tapping) -> None:
        self.progress.start(label, sum(c.size for c in chunks))
        batches = self.loader(self.src, chunks)
        try:
            for k, (idx, arrays) in enumerate(batches, 1):
                on = tapping.on
                out = model.run(arrays, (taps or ()) if on else (), on_tap if on else None,
                                stop_after)
                if keep_outputs:
                    store.write(idx, out)
                self.progress.advance(idx.size)
                tapping.ask(k)
                if stop is not None and k in asks and stop(store, chunks[:k], len(chunks)):
                    break
        finally:
            # Ends worker processes that were reading ahead when the pass stopped early.
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        self.progress.finish()

    def _shared(self, model: Model, label: str, chunks: list[np.ndarray],
                taps: list[str] | None, on_tap: TapCollector | None, store: OutputStore,
                keep_outputs: bool, stop: StopRule | None, asks: set[int],
                stop_after: int | None, tapping: _Tapping) -> None:
        """This rank's share of the batches (batch k when k mod world is its rank), exchanged
        window by window; each batch's tap moments are merged in global batch order, so every
        rank ends with exactly the accumulators one process would have. Windows also end at
        ``stop``'s checkpoints, where every rank holds the same outputs and so stops alike."""
        c = self.collective
        mine = [k for k in range(len(chunks)) if k % c.world == c.rank]
        self.progress.start(label, sum(chunks[k].size for k in mine))
        ends = sorted({*range(WINDOW, len(chunks), WINDOW), *asks, *tapping.asks,
                       len(chunks)} - {0})
        error = None
        for start, end in pairwise([0, *ends]):
            ks = [k for k in mine if start <= k < end]
            done: dict[int, tuple[np.ndarray, np.ndarray | None, TapCollector | None]] = {}
            on = tapping.on
            if error is None:
                try:
                    batches = self.loader(self.src, [chunks[k] for k in ks])
                    for k, (idx, arrays) in zip(ks, batches, strict=True):
                        collector = on_tap.empty() if on_tap is not None and on else None
                        out = model.run(arrays, (taps or ()) if on else (), collector,
                                        stop_after)
                        done[k] = (idx, out if keep_outputs else None, collector)
                        self.progress.advance(idx.size)
                except BncheckError as e:
                    error = str(e)
            shared = c.gather((done, error))
            # Every rank sees the same errors, so every rank stops alike, with the same sentence.
            first = next((e for _, e in shared if e is not None), None)
            if first is not None:
                raise BncheckError(first)
            merged = {k: v for part, _ in shared for k, v in part.items()}
            for k in sorted(merged):
                idx, out, collector = merged[k]
                if out is not None:
                    store.write(idx, out)
                if on_tap is not None and collector is not None:
                    on_tap.merge(collector)
            tapping.ask(end)
            if stop is not None and end in asks and stop(store, chunks[:end], len(chunks)):
                break
        self.progress.finish()


class _Tapping:
    """Whether a pass still taps, asking its rule at the rule's checkpoints."""

    def __init__(self, taps: TapCollector | None, rule: TapRule | None, asks: set[int]) -> None:
        self.taps = taps
        self.rule = rule
        self.asks = asks
        self.on = True

    def ask(self, batches_done: int) -> None:
        """After ``batches_done`` batches (every process holding the same merged taps)."""
        if self.on and self.rule is not None and self.taps is not None \
                and batches_done in self.asks and self.rule(self.taps, batches_done):
            self.on = False
