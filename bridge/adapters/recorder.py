"""A take streamed to disk as it comes: the real-time loop hands each block to a preallocated
ring, and a writer thread of its own moves the blocks into a WAV file. ``WavFeeder`` is the
same in the other direction, for a WAV sent through a device's return ring.

Nothing of a take is kept in memory beyond the ring (a few seconds), so a day-long session
costs what a two-second one does, and a take survives its host: the file's header is
rewritten every ``HEADER_UPDATE_S``, so after a kill -9 the file still opens and holds
everything up to about the last second. The file is RF64 that libsndfile downgrades to a
plain WAV (WAVE_FORMAT_EXTENSIBLE, 32-bit float) when it closes under 4 GiB; past 4 GiB it
stays RF64, which a plain WAV cannot hold.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import numpy as np

HEADER_UPDATE_S = 0.5  # how stale the file's header may be after a kill -9
RING_SECONDS = 4.0  # how long the writer may fall behind (a slow disk) before blocks drop
RECORD_SUFFIXES = (".wav",)

# libsndfile commands that soundfile does not wrap (sndfile.h)
_SFC_UPDATE_HEADER_NOW = 0x1060
_SFC_RF64_AUTO_DOWNGRADE = 0x1210


def check_record_path(path: Path) -> None:
    """Raise ValueError (one line) unless a take can be written at ``path``: a *.wav name,
    not a folder, in a folder that exists and where we may create or overwrite the file.

    Checked before a session connects. A probe open proves writability for real (root,
    read-only mounts, /proc); a file the probe created is removed again.
    """
    where = f"--record {path}"
    if path.is_dir():
        raise ValueError(f"{where} is a folder; give a file name ending in .wav")
    special = path.exists() and not path.is_file()  # /dev/null, /dev/full: no name to check
    if path.suffix.lower() not in RECORD_SUFFIXES and not special:
        raise ValueError(f"{where}: takes are written as WAV; give a file name ending in .wav")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{where}: folder {parent} does not exist")
    existed = path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as exc:
        raise ValueError(f"{where}: cannot write there: "
                         f"{exc.strerror or errno.errorcode.get(exc.errno, exc)}") from None
    os.close(fd)
    if not existed:
        try:
            os.unlink(path)
        except OSError:
            pass


class TakeWriter:
    """Streams blocks of (channels, block_size) float32 audio into a WAV file.

    ``push`` is the real-time side: it copies the block into a preallocated slot and moves
    an index; it never blocks, allocates or raises. When the writer has fallen
    ``RING_SECONDS`` behind, the block is dropped and counted (``dropped_blocks``). A write
    that fails (a full disk) stops the writer and sets ``error``; the caller decides.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, block_size: int) -> None:
        import soundfile as sf

        self.path = path
        self.sample_rate, self.channels, self.block_size = sample_rate, channels, block_size
        slots = max(4, int(np.ceil(RING_SECONDS * sample_rate / block_size)))
        self._ring = np.zeros((slots, channels, block_size), np.float32)
        self._slots = [self._ring[i] for i in range(slots)]  # views made once, not per block
        # Single producer (the loop) and single consumer (the writer): each index is written
        # by one thread only, and a Python int store is atomic under the GIL, so the writer
        # never sees a slot before its copy is done.
        self._pushed = 0
        self._taken = 0
        self.dropped_blocks = 0
        self.frames_written = 0
        self.error = ""
        self._stop = threading.Event()
        try:
            self._file = sf.SoundFile(str(path), "w", sample_rate, channels, "FLOAT",
                                      format="RF64")
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            # libsndfile says only "System error"; the C errno of its failed call says which
            c_errno = sf._ffi.errno
            why = os.strerror(c_errno) if getattr(exc, "code", 0) == 2 and c_errno else \
                _reason(exc)
            raise OSError(f"cannot write recording {path}: {why}") from None
        self._command(_SFC_RF64_AUTO_DOWNGRADE, 1)
        self._thread = threading.Thread(target=self._run, name="take-writer", daemon=True)
        self._thread.start()

    # -- the real-time side ---------------------------------------------------------------
    def push(self, block: np.ndarray) -> bool:
        """Queue one block (channels, block_size). Never blocks; False if it was dropped."""
        pushed = self._pushed
        if pushed - self._taken >= len(self._slots) or self.error:
            self.dropped_blocks += 1
            return False
        np.copyto(self._slots[pushed % len(self._slots)], block)
        self._pushed = pushed + 1  # publish after the copy
        return True

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        next_header = time.monotonic() + HEADER_UPDATE_S
        while True:
            stopping = self._stop.wait(0.05)
            try:
                self._drain()
                if time.monotonic() >= next_header:
                    next_header = time.monotonic() + HEADER_UPDATE_S
                    self._command(_SFC_UPDATE_HEADER_NOW, 0)
            except Exception as exc:  # a full disk, a vanished mount: say it, stop writing
                self.error = f"cannot write recording {self.path}: {_reason(exc)}"
                return
            if stopping:
                return

    def _drain(self) -> None:
        n_slots = len(self._slots)
        while self._taken < self._pushed:
            first = self._taken % n_slots
            last = min(n_slots, first + (self._pushed - self._taken))
            chunk = self._ring[first:last]  # (blocks, channels, frames) -> (frames, channels)
            self._file.write(chunk.transpose(0, 2, 1).reshape(-1, self.channels))
            self.frames_written += chunk.shape[0] * self.block_size
            self._taken += last - first

    def _command(self, command: int, value: int) -> None:
        # soundfile wraps no sf_command for these; its cffi handle to libsndfile is the way
        import soundfile as sf

        sf._snd.sf_command(self._file._file, command, sf._ffi.NULL, value)
        if command == _SFC_UPDATE_HEADER_NOW and sf._snd.sf_error(self._file._file):
            raise OSError(sf._ffi.string(sf._snd.sf_strerror(self._file._file)).decode())

    def close(self) -> str:
        """Write what is queued, fix the header, close. Returns the error, if any ("")."""
        self._stop.set()
        self._thread.join()
        try:
            if not self.error:
                self._drain()
            self._file.close()
        except Exception as exc:
            self.error = self.error or f"cannot write recording {self.path}: {_reason(exc)}"
        return self.error


class WavFeeder:
    """Streams a WAV file as blocks of (channels, block_size) float32 for a return ring: a
    reader thread keeps a preallocated ring of ``RING_SECONDS`` filled ahead, and ``pull``,
    the real-time side, copies the next block out without blocking or allocating.

    Mono is spread to every channel; a file of fewer channels fills the first ones. A block
    the reader has not made ready in time (a slow disk) goes out as silence and is counted
    (``late_blocks``); the file's frames stay in order after it.
    """

    def __init__(self, path: Path, channels: int, block_size: int) -> None:
        import soundfile as sf

        self.path, self.channels, self.block_size = path, channels, block_size
        self._file = sf.SoundFile(str(path))
        self.frames = self._file.frames
        self._spread = self._file.channels == 1 and channels > 1
        slots = max(4, int(np.ceil(RING_SECONDS * self._file.samplerate / block_size)))
        self._ring = np.zeros((slots, channels, block_size), np.float32)
        self._slots = [self._ring[i] for i in range(slots)]
        self._blocks = int(np.ceil(self.frames / block_size))
        self._filled = 0  # written by the reader only
        self._pulled = 0  # written by the loop only
        self.late_blocks = 0
        self.error = ""
        self._stop = threading.Event()
        self._fill()  # the first RING_SECONDS before the loop starts
        self._thread = threading.Thread(target=self._run, name="send-reader", daemon=True)
        self._thread.start()

    def pull(self, out: np.ndarray) -> None:
        """The next block of the file into ``out``; silence past its end or when late."""
        pulled = self._pulled
        if pulled >= self._blocks:
            out.fill(0)
            return
        if pulled >= self._filled:
            out.fill(0)
            self.late_blocks += 1
        else:
            np.copyto(out, self._slots[pulled % len(self._slots)])
        self._pulled = pulled + 1  # a late block is skipped, so the file keeps its time

    def _fill(self) -> None:
        n_slots, block = len(self._slots), self.block_size
        while self._filled < self._blocks and self._filled - self._pulled < n_slots:
            k = self._filled
            if k < self._pulled:  # the loop went past it (late): skip it in the file
                self._file.seek(min(self.frames, self._pulled * block))
                self._filled = self._pulled
                continue
            data = self._file.read(block, dtype="float32", always_2d=True)  # (frames, ch)
            slot = self._slots[k % n_slots]
            slot.fill(0)
            if self._spread:
                slot[:, : data.shape[0]] = data[:, 0]
            else:
                n = min(self.channels, data.shape[1])
                slot[:n, : data.shape[0]] = data[:, :n].T
            self._filled = k + 1  # publish after the copy

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self._fill()
            except Exception as exc:  # the file vanished or went bad under us
                self.error = f"cannot read audio file {self.path}: {_reason(exc)}"
                return
            if self._filled >= self._blocks:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._file.close()


def _reason(exc: BaseException) -> str:
    """An OS or libsndfile error as words, never empty."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text or type(exc).__name__
