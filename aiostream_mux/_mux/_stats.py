"""Counters a running mux keeps, and the snapshots ``Stream.statistics()`` returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._policy import Activation

__all__ = ["Counters", "MemberStatistics", "MuxStatistics"]


@dataclass(frozen=True)
class MemberStatistics:
    """What one member streamer of a mux has done so far.

    Attributes
    ----------
    index : int
        Position of the member in the mux's ``streamers``.
    samples : int
        Samples drawn from it.
    activations : int
        Times it was activated.
    exhaustions : int
        Times one of its activations ended (budget spent or source exhausted).
    buffered : int
        Samples its producers hold right now, prefetched ahead of the consumer
        (async members; always 0 with sync members).
    share : float
        Its part of all samples drawn so far (0 before the first sample).
    target : float or None
        The part its weight asks for (``None`` where the mux has no weights).
        For a ``StochasticMux`` with a ``rate``, as in pescador, members are
        activated uniformly and each activation gives about ``rate`` samples
        whatever its weight, which only orders draws within the active set:
        there the share tends to the activation frequency, not to the target,
        and :attr:`MuxStatistics.mixture_error` shows by how much.
    """

    index: int
    samples: int
    activations: int
    exhaustions: int
    buffered: int
    share: float
    target: float | None


@dataclass(frozen=True)
class MuxStatistics:
    """A snapshot of a running mux: totals, and one entry per member.

    Attributes
    ----------
    samples, activations, exhaustions : int
        Totals over the members.
    waited : float
        Seconds the consumer spent waiting for a sample that was not there yet
        (async members; 0.0 with sync members, which are pulled directly).
    members : tuple of MemberStatistics
        In the order of the mux's ``streamers``.
    """

    samples: int
    activations: int
    exhaustions: int
    waited: float
    members: tuple[MemberStatistics, ...]

    @property
    def mixture_error(self) -> float | None:
        """Largest gap between a member's share of the samples and its target share."""
        gaps = [abs(m.share - m.target) for m in self.members if m.target is not None]
        return max(gaps) if gaps and self.samples else None


class Counters:
    """The mutable counters a driver updates; cheap enough for every sample."""

    __slots__ = (
        "activations",
        "buffered",
        "exhaustions",
        "samples",
        "slot_member",
        "targets",
        "waited",
    )

    def __init__(self, n_members: int, n_slots: int, targets: Sequence[float] | None) -> None:
        self.samples = [0] * n_members
        self.activations = [0] * n_members
        self.exhaustions = [0] * n_members
        self.slot_member = [0] * n_slots
        self.waited = 0.0
        self.targets = None if targets is None else [float(t) for t in targets]
        #: Returns (member index, buffered samples) pairs; set by the async driver.
        self.buffered: Callable[[], list[tuple[int, int]]] | None = None

    def activated(self, activation: Activation) -> None:
        """Count an activation and remember which member holds its slot."""
        self.slot_member[activation.slot] = activation.index
        self.activations[activation.index] += 1

    def exhausted(self, slot: int) -> None:
        """Count the end of the activation in ``slot``."""
        self.exhaustions[self.slot_member[slot]] += 1

    def snapshot(self) -> MuxStatistics:
        """Freeze the counters into a :class:`MuxStatistics`."""
        buffered = [0] * len(self.samples)
        if self.buffered is not None:
            for index, count in self.buffered():
                buffered[index] += count
        total = sum(self.samples)
        members = tuple(
            MemberStatistics(
                index=i,
                samples=self.samples[i],
                activations=self.activations[i],
                exhaustions=self.exhaustions[i],
                buffered=buffered[i],
                share=self.samples[i] / total if total else 0.0,
                target=None if self.targets is None else self.targets[i],
            )
            for i in range(len(self.samples))
        )
        return MuxStatistics(
            samples=total,
            activations=sum(self.activations),
            exhaustions=sum(self.exhaustions),
            waited=self.waited,
            members=members,
        )
