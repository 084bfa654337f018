"""Shared memory for large arrays: recycled files in a run's private directory.

The worker writes a large array into a *slot*, the file ``<slot>.shm`` of the
run's private directory on a memory filesystem (:data:`SHM_ROOT`), with
``pwrite``, and sends only the slot's number. The consumer maps the file
(private, so copy on write) and builds the array over the mapping: no copy on
its side and no bytes through the socket.

Once the consumer's array and every view of it are gone, the mapping is
collected and the consumer gives the slot back with its next acknowledgement
(see :func:`~._zmq_wire.encode_ack`); the worker writes a later array into it,
over pages the kernel has already allocated. A steady stream of large arrays
thus costs one memory copy each, in the worker.

A slot mapped when the consumer process forks is retired instead of given back:
the worker deletes it (the pages live on while a child maps them), since the
child would see a later array written into the file.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import resource
import stat
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["SHM_ROOT", "SlotReader", "SlotWriter", "shm_root", "slot_path"]

#: Where private directories go when it exists: a memory filesystem on Linux.
SHM_ROOT = "/dev/shm"

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
#: Free slots kept for reuse even beyond ``keep_bytes``: a steady stream of
#: arrays larger than that still writes into recycled pages.
KEEP_ALWAYS = 4


def shm_root() -> str | None:
    """:data:`SHM_ROOT` if this process may make directories there, else None."""
    if os.path.isdir(SHM_ROOT) and os.access(SHM_ROOT, os.W_OK | os.X_OK):
        return SHM_ROOT
    return None


def slot_path(directory: str, slot: int) -> str:
    """Return the file of ``slot`` in a run's private ``directory``."""
    return os.path.join(directory, f"{slot}.shm")


class SlotError(Exception):
    """The peer broke the shared-memory protocol; the text says how."""


class SlotWriter:
    """The worker's slots: write arrays into them, take them back when the consumer is done.

    ``keep_bytes`` bounds the slots kept free for reuse (but :data:`KEEP_ALWAYS`
    are kept whatever their size); a slot given back beyond that is deleted.
    Slots the consumer still holds are its arrays' memory.
    """

    def __init__(self, directory: str, keep_bytes: int) -> None:
        self.directory = directory
        self.keep_bytes = keep_bytes
        self._free: dict[int, list[int]] = {}  # size -> free slots of that size (never [])
        self._free_bytes = 0
        self._free_count = 0
        self._used: dict[int, int] = {}  # slot -> size, written and not given back
        self._next = 0

    @property
    def in_use(self) -> int:
        """Slots written and not given back yet."""
        return len(self._used)

    def write(self, raw: np.ndarray[Any, Any]) -> int | None:
        """Write the bytes of ``raw`` (1-d, contiguous) into a slot; return its number.

        Returns None if the file cannot be written (a full ``/dev/shm``, the
        directory already removed): the caller sends the array another way.
        """
        nbytes = raw.nbytes
        slot, size = self._take(nbytes)
        path = slot_path(self.directory, slot)
        flags = os.O_WRONLY | _NOFOLLOW
        if size < 0:
            flags |= os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(path, flags, 0o600)
        except OSError:
            self._drop(slot)
            return None
        try:
            if 0 <= size != nbytes:
                os.ftruncate(fd, nbytes)  # keeps the pages both sizes share
            view, done = raw.data, 0
            while done < nbytes:
                done += os.pwrite(fd, view[done:], done)
        except OSError:
            self._drop(slot)
            return None
        finally:
            os.close(fd)
        self._used[slot] = nbytes
        return slot

    def _take(self, nbytes: int) -> tuple[int, int]:
        """Pick a free slot, of this size if there is one: ``(slot, size)``, or a new one and -1."""
        free = self._free
        size = nbytes if nbytes in free else next(iter(free), -1)
        if size < 0:
            slot, self._next = self._next, self._next + 1
            return slot, -1
        slots = free[size]
        slot = slots.pop()
        if not slots:
            del free[size]
        self._free_bytes -= size
        self._free_count -= 1
        return slot, size

    def _drop(self, slot: int) -> None:
        with contextlib.suppress(OSError):
            os.unlink(slot_path(self.directory, slot))

    def _release(self, slots: Iterable[int], how: str) -> Iterator[tuple[int, int]]:
        for slot in slots:
            size = self._used.pop(slot, None)
            if size is None:
                raise SlotError(f"slot {slot} was {how}, but it is not in use")
            yield slot, size

    def retire(self, slots: Iterable[int]) -> None:
        """Delete ``slots``: the consumer forked while it mapped them, so a child may still.

        Raises
        ------
        SlotError
            For a slot that is not in use.
        """
        for slot, _ in self._release(slots, "retired"):
            self._drop(slot)  # the pages live on while a process maps them

    def give_back(self, slots: Iterable[int]) -> None:
        """Take back ``slots`` from the consumer (or from a sample that was not sent).

        Raises
        ------
        SlotError
            For a slot that is not in use.
        """
        for slot, size in self._release(slots, "given back"):
            if self._free_bytes + size <= self.keep_bytes or self._free_count < KEEP_ALWAYS:
                self._free.setdefault(size, []).append(slot)
                self._free_bytes += size
                self._free_count += 1
            else:
                self._drop(slot)


#: Bumped before every fork of this process: mappings made before it are never reused.
_forks = [0]
#: The weakrefs of the live mappings of this process, all readers together; held
#: here so that their callbacks still run after a reader (a closed run) is gone.
_mappings: set[weakref.ref[mmap.mmap]] = set()
#: Held across a mapping and its record, by the fork hooks, and by the callbacks.
_lock = threading.RLock()


def _before_fork() -> None:
    _lock.acquire()
    _forks[0] += 1


def _after_fork() -> None:
    _lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )

# Before Python 3.13 an mmap keeps a file descriptor of its own while it lives.
_MMAP_OPTIONS: dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}


def _max_mapped() -> int:
    """How many arrays may be live mappings at once before the next is copied."""
    if _MMAP_OPTIONS:
        return 1 << 30  # no descriptor each
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    return max(16, min(MAX_MAPPED, limit // 4))


#: Live mappings at most (each holds a file descriptor before Python 3.13).
MAX_MAPPED = 256


def _gone(
    mapped: dict[int, Any],
    returned: deque[int],
    retired: deque[int],
    slot: int,
    forks: int,
    ref: weakref.ref[mmap.mmap],
) -> None:
    # A weakref callback, on whatever thread dropped the last reference.
    with _lock:
        _mappings.discard(ref)
        mapped.pop(slot, None)
        # A child forked meanwhile may still map it: never write it again.
        (returned if forks == _forks[0] else retired).append(slot)


class SlotReader:
    """The consumer's side: map slots, and collect those whose arrays are gone.

    Holds no reference to the run, so the callbacks never keep it alive.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        #: Slots to give back to the worker with the next acknowledgement.
        self.returned: deque[int] = deque()
        #: Slots done with here but mapped when this process forked: to delete.
        self.retired: deque[int] = deque()
        self._mapped: dict[int, weakref.ref[mmap.mmap]] = {}
        self._max_mapped = _max_mapped()

    def map(self, slot: Any, nbytes: int) -> mmap.mmap | bytearray:
        """Map ``slot`` (``nbytes`` bytes) privately, copy on write.

        The bytes are read into memory of their own instead, and the slot given
        back at once, when :func:`_max_mapped` arrays are mapped already (each
        mapping holds a file descriptor before Python 3.13), or when no more
        mappings can be made (``vm.max_map_count``).

        Raises
        ------
        SlotError
            For a slot number that is not one, a slot still mapped here, or a
            file that is missing or not of ``nbytes`` bytes.
        """
        if type(slot) is not int or not 0 <= slot < 2**63:
            raise SlotError(f"a shared-memory slot {slot!r:.40}")
        if slot in self._mapped:
            raise SlotError(f"shared-memory slot {slot} reused while its array is alive")
        try:
            fd = os.open(slot_path(self.directory, slot), os.O_RDONLY | _NOFOLLOW)
        except OSError as exc:
            raise SlotError(f"shared-memory slot {slot} cannot be opened: {exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size != nbytes:
                raise SlotError(
                    f"shared-memory slot {slot} holds {info.st_size} bytes, not {nbytes}"
                )
            with _lock:  # no fork between the mapping and its record
                if len(_mappings) >= self._max_mapped:
                    return self._read(fd, nbytes, slot)
                try:
                    mapping = mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE, **_MMAP_OPTIONS)
                except OSError:  # out of mappings
                    return self._read(fd, nbytes, slot)
                ref = weakref.ref(
                    mapping,
                    functools.partial(
                        _gone, self._mapped, self.returned, self.retired, slot, _forks[0]
                    ),
                )
                _mappings.add(ref)
                self._mapped[slot] = ref
        finally:
            os.close(fd)
        return mapping

    def _read(self, fd: int, nbytes: int, slot: int) -> bytearray:
        data = bytearray(nbytes)
        view, done = memoryview(data), 0
        while done < nbytes:
            count = os.preadv(fd, [view[done:]], done)
            if count == 0:
                raise SlotError(f"shared-memory slot {slot} ended early")
            done += count
        self.returned.append(slot)
        return data

    def owes(self) -> bool:
        """Whether there are slots to give back or to retire."""
        return bool(self.returned or self.retired)

    def take(self) -> tuple[list[int], list[int]]:
        """Return the slots to give back and those to retire now, and forget them."""
        returned, retired = self.returned, self.retired
        return (
            [returned.popleft() for _ in range(len(returned))],
            [retired.popleft() for _ in range(len(retired))],
        )

    def put_back(self, returned: list[int], retired: list[int]) -> None:
        """Keep slots taken by :meth:`take` that could not be sent, for the next time."""
        self.returned.extendleft(reversed(returned))
        self.retired.extendleft(reversed(retired))
