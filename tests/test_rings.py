"""Ring semantics over real shared memory: wrap-around, all-or-nothing writes, zero-fill,
corrupt indices, FIFO order, bounds checks of the C functions, and a cross-process SPSC
stress of the C-extension ring (the memory-ordering test)."""

from __future__ import annotations

import mmap
import subprocess
import time

import numpy as np
import pytest
from proto_helpers import TIMEOUT, device_rings, drain, header, start_child, wait_until

from bridge.transport import Device, Host, Message, _shm, cmd
from bridge.transport.layout import (
    AUDIO_RING_FRAMES,
    MESSAGE_RING_SLOTS,
    MESSAGE_SIZE,
    RING_CONTROL_SIZE,
    RING_READ_INDEX_OFFSET,
)
from bridge.transport.ring import CORRUPT, AudioRing, MessageRing
from bridge.transport.shm import Segment, namespace_prefix

CAP = AUDIO_RING_FRAMES
U32 = 1 << 32


def audio_buffer(channels: int) -> mmap.mmap:
    """A page-aligned anonymous mapping holding one audio ring at offset 0."""
    return mmap.mmap(-1, RING_CONTROL_SIZE + channels * CAP * 4)


def set_indices(buf, ctl: int, write: int, read: int) -> None:
    _shm.store_u32(buf, ctl, write % U32)
    _shm.store_u32(buf, ctl + RING_READ_INDEX_OFFSET, read % U32)


def indices(buf, ctl: int = 0) -> tuple[int, int]:
    return _shm.load_u32(buf, ctl), _shm.load_u32(buf, ctl + RING_READ_INDEX_OFFSET)


def counting(start: int, n: int, channels: int) -> np.ndarray:
    """Frames start..start+n-1; channel c holds frame + c / 4 (exact in float32)."""
    values = np.arange(start, start + n, dtype=np.float64)[None, :]
    return np.ascontiguousarray(values + np.arange(channels)[:, None] / 4, dtype=np.float32)


# ---- AudioRing --------------------------------------------------------------------------


@pytest.mark.parametrize("start_index", [0, U32 - 3 * CAP // 2],
                         ids=["from-zero", "across-uint32-wrap"])
def test_audio_ring_is_sample_exact_over_several_wraps_with_odd_block_sizes(start_index):
    channels = 3
    buf = audio_buffer(channels)
    set_indices(buf, 0, start_index, start_index)
    ring = AudioRing(buf, 0, channels)
    write_sizes, read_sizes = [1000, 777, 3001, 1], [513, 2049, 999, 4097]
    total = 6 * CAP + 123
    written = read = k = 0
    while read < total:
        n = min(write_sizes[k % 4], total - written)
        if n and ring.fill() + n <= CAP:
            assert ring.write(counting(written, n, channels)) == n
            written += n
        out = np.full((channels, read_sizes[k % 4]), np.nan, np.float32)
        got = ring.read(out)
        assert got == min(read_sizes[k % 4], written - read)
        np.testing.assert_array_equal(out[:, :got], counting(read, got, channels))
        assert not out[:, got:].any()
        read += got
        k += 1
    assert ring.fill() == 0
    w, r = indices(buf)
    assert w == r == (start_index + total) % U32


def test_audio_ring_write_is_all_or_nothing_when_full():
    buf = audio_buffer(2)
    ring = AudioRing(buf, 0, 2)
    assert ring.write(counting(0, CAP - 10, 2)) == CAP - 10
    assert ring.write(counting(CAP - 10, 11, 2)) == 0  # does not fit: nothing written
    assert ring.fill() == CAP - 10
    assert indices(buf)[0] == CAP - 10
    assert ring.write(counting(CAP - 10, 10, 2)) == 10  # exactly fills it
    assert ring.fill() == CAP
    assert ring.write(counting(CAP, 1, 2)) == 0
    out = np.zeros((2, CAP), np.float32)
    assert ring.read(out) == CAP
    np.testing.assert_array_equal(out, counting(0, CAP, 2))


def test_audio_ring_short_read_returns_what_there_is_and_zero_fills_the_rest():
    buf = audio_buffer(2)
    ring = AudioRing(buf, 0, 2)
    assert ring.write(counting(100, 5, 2)) == 5
    out = np.full((2, 12), 7.0, np.float32)
    assert ring.read(out) == 5
    np.testing.assert_array_equal(out[:, :5], counting(100, 5, 2))
    np.testing.assert_array_equal(out[:, 5:], np.zeros((2, 7), np.float32))
    out.fill(7.0)
    assert ring.read(out) == 0  # empty: all zeros, read index unchanged
    assert not out.any()
    assert indices(buf) == (5, 5)


def test_audio_ring_discard_drops_everything_queued():
    buf = audio_buffer(1)
    ring = AudioRing(buf, 0, 1)
    ring.write(counting(0, 300, 1))
    assert ring.discard() == 300
    assert ring.fill() == 0
    ring.write(counting(300, 4, 1))
    out = np.zeros((1, 4), np.float32)
    assert ring.read(out) == 4
    np.testing.assert_array_equal(out, counting(300, 4, 1))


@pytest.mark.parametrize("excess", [1, 1000, U32 // 2])
def test_audio_ring_with_corrupt_indices_returns_corrupt_and_never_touches_data(excess):
    buf = audio_buffer(2)
    ring = AudioRing(buf, 0, 2)
    set_indices(buf, 0, 5000 + CAP + excess, 5000)  # fill > capacity: impossible
    before = bytes(buf[RING_CONTROL_SIZE:])
    assert ring.write(counting(0, 16, 2)) == CORRUPT
    out = np.full((2, 64), 3.0, np.float32)
    assert ring.read(out) == CORRUPT
    assert not out.any(), "a corrupt read must zero its output"
    assert indices(buf) == ((5000 + CAP + excess) % U32, 5000), "indices must stay as found"
    assert bytes(buf[RING_CONTROL_SIZE:]) == before
    assert ring.discard() == (CAP + excess) % U32  # the consumer's repair
    assert ring.write(counting(0, 16, 2)) == 16


def test_audio_ring_rejects_blocks_of_the_wrong_type_or_shape():
    buf = audio_buffer(2)
    ring = AudioRing(buf, 0, 2)
    with pytest.raises(ValueError):
        ring.write(np.zeros((2, 8), np.float64))
    with pytest.raises(ValueError):
        ring.write(np.zeros(7, np.float32))  # not a multiple of the channel count
    with pytest.raises((ValueError, BufferError)):
        ring.write(np.zeros((8, 2), np.float32).T)  # not C-contiguous
    with pytest.raises(ValueError):
        ring.read(np.zeros((2, 8), np.int32))
    assert indices(buf) == (0, 0)


# ---- MessageRing ------------------------------------------------------------------------


def numbered(i: int) -> bytes:
    m = Message()
    m.type = 0x0100
    m.seq = i
    m.set_payload(i.to_bytes(4, "little") * 56)
    return bytes(m.buf)


@pytest.mark.parametrize("start_index", [0, U32 - 700], ids=["from-zero", "across-uint32-wrap"])
def test_message_ring_is_fifo_and_refuses_a_push_when_full(start_index):
    buf = mmap.mmap(-1, RING_CONTROL_SIZE + MESSAGE_RING_SLOTS * MESSAGE_SIZE)
    set_indices(buf, 0, start_index, start_index)
    ring = MessageRing(buf, 0)
    into = bytearray(MESSAGE_SIZE)
    assert ring.pop(into) == 0  # empty
    for i in range(MESSAGE_RING_SLOTS):
        assert ring.push(numbered(i)) == 1
    assert ring.fill() == MESSAGE_RING_SLOTS
    assert ring.push(numbered(9999)) == 0  # full: refused, nothing overwritten
    for i in range(MESSAGE_RING_SLOTS // 2):
        assert ring.pop(into) == 1
        assert bytes(into) == numbered(i)
    for i in range(MESSAGE_RING_SLOTS, MESSAGE_RING_SLOTS + MESSAGE_RING_SLOTS // 2):
        assert ring.push(numbered(i)) == 1  # these wrap around the slot array
    for i in range(MESSAGE_RING_SLOTS // 2, MESSAGE_RING_SLOTS + MESSAGE_RING_SLOTS // 2):
        assert ring.pop(into) == 1
        assert bytes(into) == numbered(i)
    assert ring.pop(into) == 0
    assert ring.fill() == 0


@pytest.mark.parametrize("start_index", [0, U32 - 700], ids=["from-zero", "across-uint32-wrap"])
def test_message_ring_pop_many_is_fifo_across_the_wrap_and_bounded_by_count_and_buffer(
        start_index):
    buf = mmap.mmap(-1, RING_CONTROL_SIZE + MESSAGE_RING_SLOTS * MESSAGE_SIZE)
    set_indices(buf, 0, start_index, start_index)
    ring = MessageRing(buf, 0)
    into = bytearray(10 * MESSAGE_SIZE)
    assert ring.pop_many(into, 10) == 0  # empty
    pushed = popped = 0
    for _round in range(5):  # 5 x 300 messages: several wraps of the 1024-slot array
        for _ in range(300):
            assert ring.push(numbered(pushed)) == 1
            pushed += 1
        while popped < pushed:
            n = ring.pop_many(into, 7)  # the count caps each batch below the buffer's 10
            assert 1 <= n <= 7
            for k in range(n):
                assert bytes(into[k * MESSAGE_SIZE:(k + 1) * MESSAGE_SIZE]) == numbered(popped)
                popped += 1
    assert ring.fill() == 0
    for i in range(20):
        ring.push(numbered(i))
    assert ring.pop_many(bytearray(3 * MESSAGE_SIZE + 100), 50) == 3  # whole slots only
    assert ring.pop_many(into, 0) == 0 and ring.fill() == 17


def test_message_ring_with_corrupt_indices_returns_corrupt():
    buf = mmap.mmap(-1, RING_CONTROL_SIZE + MESSAGE_RING_SLOTS * MESSAGE_SIZE)
    ring = MessageRing(buf, 0)
    set_indices(buf, 0, 10 + MESSAGE_RING_SLOTS + 1, 10)
    into = bytearray(b"\x55" * MESSAGE_SIZE)
    assert ring.push(numbered(1)) == CORRUPT
    assert ring.pop(into) == CORRUPT
    assert ring.pop_many(bytearray(4 * MESSAGE_SIZE), 4) == CORRUPT
    assert indices(buf) == (10 + MESSAGE_RING_SLOTS + 1, 10)
    with pytest.raises(ValueError):
        ring.push(b"short")
    with pytest.raises(ValueError):
        ring.pop(bytearray(MESSAGE_SIZE - 1))


# ---- the C functions never touch memory outside the buffer --------------------------------


def test_c_functions_reject_out_of_bounds_and_misaligned_offsets():
    buf = mmap.mmap(-1, 4096)
    size = len(buf)
    for off in (-4, -1, size - 2, size, size + 4, 1 << 40):
        with pytest.raises(IndexError):
            _shm.load_u32(buf, off)
        with pytest.raises(IndexError):
            _shm.store_u32(buf, off, 1)
        with pytest.raises(IndexError):
            _shm.cas_u32(buf, off, 0, 1)
    for off in (size - 4, size, -8):
        with pytest.raises(IndexError):
            _shm.load_u64(buf, off)
        with pytest.raises(IndexError):
            _shm.add_u64(buf, off, 1)
    for off in (1, 2, 4094):
        with pytest.raises((ValueError, IndexError)):
            _shm.load_u32(buf, off)
    with pytest.raises(ValueError):
        _shm.load_u64(buf, 4)  # in bounds but not 8-byte aligned
    with pytest.raises((IndexError, ValueError)):
        _shm.ring_fill(buf, size - 64)  # read_index would lie beyond the end
    with pytest.raises(OverflowError):
        _shm.store_u32(buf, 0, 1 << 32)
    assert not any(buf[:]), "a rejected call must not write anything"
    with pytest.raises((TypeError, BufferError)):
        _shm.load_u32(bytes(8), 0)  # read-only buffers are refused


def test_c_ring_functions_reject_rings_that_do_not_fit_the_buffer():
    buf = audio_buffer(2)
    block = np.zeros((2, 16), np.float32)
    out = np.zeros((2, 16), np.float32)
    msg, into = bytes(MESSAGE_SIZE), bytearray(MESSAGE_SIZE)
    bad_layouts = [
        (0, RING_CONTROL_SIZE, 3, CAP),  # 3 channels of data do not fit a 2-channel mapping
        (0, RING_CONTROL_SIZE, 2, 2 * CAP),  # capacity larger than the mapping
        (0, RING_CONTROL_SIZE + 4, 2, CAP),  # data runs past the end
        (-64, RING_CONTROL_SIZE, 2, CAP),
        (len(buf), RING_CONTROL_SIZE, 2, CAP),
        (32, RING_CONTROL_SIZE, 2, CAP),  # control block not 64-byte aligned
    ]
    for ctl, data, channels, cap in bad_layouts:
        args = (buf, ctl, data, channels, cap)
        with pytest.raises((IndexError, ValueError)):
            _shm.audio_write(*args, np.zeros((channels, 16), np.float32))
        with pytest.raises((IndexError, ValueError)):
            _shm.audio_read(*args, np.zeros((channels, 16), np.float32))
    for cap in (0, -16, 1000, 3):
        with pytest.raises(ValueError):
            _shm.audio_write(buf, 0, RING_CONTROL_SIZE, 2, cap, block)
        with pytest.raises(ValueError):
            _shm.msg_write(buf, 0, RING_CONTROL_SIZE, cap, msg)
    for channels in (0, -1):
        with pytest.raises(ValueError):
            _shm.audio_read(buf, 0, RING_CONTROL_SIZE, channels, CAP, out)
    with pytest.raises((IndexError, ValueError)):
        _shm.msg_write(buf, 0, RING_CONTROL_SIZE, 1 << 20, msg)  # slots beyond the mapping
    with pytest.raises((IndexError, ValueError)):
        _shm.msg_read(buf, 0, RING_CONTROL_SIZE, 1 << 20, into)
    assert indices(buf) == (0, 0)


@pytest.mark.parametrize("function", ["audio_write", "audio_read"])
@pytest.mark.parametrize("channels", [2**62, 2**62 + 1], ids=["2^62", "2^62+1"])
def test_c_audio_functions_reject_absurd_channel_counts_instead_of_crashing(function, channels):
    # 4 * channels and channels * capacity * 4 overflow Py_ssize_t for these counts (0 and a
    # small positive size); the functions must still refuse them. Run in a child process, so
    # that a crash cannot take pytest down.
    proc = start_child("c-call", function, str(channels), "1")
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"_shm.{function} with {channels} channels hung")
    assert proc.returncode == 0, (f"_shm.{function} with {channels} channels crashed the "
                                  f"process (exit code {proc.returncode}) {err}")
    assert out.startswith(("raised ValueError", "raised IndexError")), out


# ---- endpoints survive corrupt rings ------------------------------------------------------


def test_device_discards_a_corrupt_command_ring_and_keeps_answering(namespace):
    with Device() as dev:
        dev.start("Corrupt", 2, 48000, 256)
        commands, responses = device_rings(dev)
        ctl = header(dev)["command_ring_offset"]
        _, r = indices(dev.segment.buf, ctl)
        set_indices(dev.segment.buf, ctl, r + MESSAGE_RING_SLOTS + 7, r)
        assert dev.process_commands() == 0  # never raises
        assert "corrupt" in dev.last_error
        assert commands.fill() == 0, "the consumer must repair its ring by discarding"
        ping = cmd.ping()
        assert commands.push(ping.buf) == 1
        assert dev.process_commands() == 1
        [pong] = drain(responses)
        assert pong.type == cmd.T.Pong and pong.request_seq == ping.seq


def test_host_recovers_from_corrupt_audio_ring_indices(spawn):
    dev = spawn.device("--channels", "2")
    with Host() as host:
        host.set_local_buffer_info(48000, 256)
        host.connect(dev.id, timeout=TIMEOUT)
        seg = Segment.attach(host.device.segment_name)  # a mapping of our own
        ctl = header(seg.buf)["audio_ring_offset"]
        w, _ = indices(seg.buf, ctl)
        _shm.store_u32(seg.buf, ctl + RING_READ_INDEX_OFFSET, (w - CAP - 100) % U32)
        seg.close()
        out = np.full((2, 256), 9.0, np.float32)
        assert host.receive_audio(out) == 0
        assert not out.any()
        assert "corrupt" in host.stats.last_error

        def audio_again():
            time.sleep(0.002)
            return host.receive_audio(out) == 256

        wait_until(audio_again, 10.0, "audio after the host discarded the corrupt ring")
        assert host.connected
        host.ping(timeout=TIMEOUT)
    assert dev.proc.poll() is None


# ---- cross-process SPSC stress ------------------------------------------------------------


def test_audio_ring_cross_process_spsc_stress_delivers_exact_sequence(namespace):
    """A child writes 2 M frames of a counting sequence in random block sizes while we read
    in other random block sizes: no loss, duplication, reordering or torn data, across the
    uint32 wrap of the indices."""
    channels, total = 2, 2_000_000
    name = namespace_prefix(namespace) + "spsc-audio"
    seg = Segment.create(name, RING_CONTROL_SIZE + channels * CAP * 4)
    start = U32 - 1_000_000  # the free-running indices wrap halfway through
    set_indices(seg.buf, 0, start, start)
    ring = AudioRing(seg.buf, 0, channels)
    writer = start_child("audio-writer", name, str(total), "7", str(channels))
    rng = np.random.default_rng(11)
    offsets = (np.arange(channels, dtype=np.float64) / 4)[:, None]
    outs = {}
    pos = 0
    deadline = time.monotonic() + 120
    try:
        while pos < total:
            size = int(rng.integers(1, 801))
            out = outs.get(size)
            if out is None:
                out = outs[size] = np.empty((channels, size), np.float32)
            got = ring.read(out)
            assert 0 <= got <= size, f"read returned {got} at frame {pos}"
            if got:
                expect = np.arange(pos, pos + got, dtype=np.float64) + offsets
                if not np.array_equal(out[:, :got], expect.astype(np.float32)):
                    bad = np.argwhere(out[:, :got] != expect.astype(np.float32))[0]
                    pytest.fail(f"frame {pos + bad[1]} channel {bad[0]}: got "
                                f"{out[bad[0], bad[1]]}, expected {expect[bad[0], bad[1]]}")
                pos += got
            else:
                if writer.poll() not in (None, 0):
                    pytest.fail(f"writer failed: {writer.communicate()}")
                time.sleep(0)
            assert not out[:, got:].any(), "the unread part of a short read must be zero"
            assert time.monotonic() < deadline, f"stalled at frame {pos}"
        out_text, err = writer.communicate(timeout=30)
        assert writer.returncode == 0 and out_text.strip() == "done", (out_text, err)
        assert ring.fill() == 0
        assert indices(seg.buf) == ((start + total) % U32, (start + total) % U32)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        seg.close()


def test_message_ring_cross_process_spsc_stress_delivers_every_message_intact(namespace):
    count = 100_000
    name = namespace_prefix(namespace) + "spsc-msg"
    seg = Segment.create(name, RING_CONTROL_SIZE + MESSAGE_RING_SLOTS * MESSAGE_SIZE)
    start = U32 - 50_000
    set_indices(seg.buf, 0, start, start)
    ring = MessageRing(seg.buf, 0)
    writer = start_child("msg-writer", name, str(count))
    patterns = [bytes((i + k) & 0xFF for k in range(224)) for i in range(256)]
    rx = Message()
    i = 0
    deadline = time.monotonic() + 120
    try:
        while i < count:
            got = ring.pop(rx.buf)
            if got == 1:
                assert rx.seq == i + 1, f"message {i}: got seq {rx.seq}"
                assert bytes(rx.payload) == patterns[i & 0xFF], f"message {i} is torn"
                i += 1
            else:
                assert got == 0, f"pop returned {got}"
                if writer.poll() not in (None, 0):
                    pytest.fail(f"writer failed: {writer.communicate()}")
                time.sleep(0)
            assert time.monotonic() < deadline, f"stalled at message {i}"
        out, err = writer.communicate(timeout=30)
        assert writer.returncode == 0 and out.strip() == "done", (out, err)
        assert ring.pop(rx.buf) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        seg.close()
