"""Bad segments get a clear error naming the segment and the fault, never a crash; device
ids are validated with errors that name the problem."""

from __future__ import annotations

import gc
import os
import time

import pytest
from proto_helpers import header, heartbeating, start_child

from bridge.transport import Device, Host, Registry, SegmentError
from bridge.transport.host import validate_segment
from bridge.transport.layout import (
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    REGISTRY_HEADER,
    REGISTRY_SIZE,
    REGISTRY_SLOTS,
    TRANSPORT_HEADER,
    DeviceState,
    SlotState,
)
from bridge.transport.shm import Segment, namespace_prefix, registry_name, transport_name

VERSION = f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"  # this implementation's protocol version


@pytest.fixture
def device(namespace):
    """A device registered in-process (it never processes commands: connects fail early)."""
    with Device() as dev:
        dev.start("Victim", 2, 48000, 256, return_audio=True)
        path, total = shm_path(dev.segment.name), header(dev)["total_size"]
        try:
            yield dev
        finally:
            # Tests shrink the segment under our own mapping; give it its size back so that
            # stopping the device (which stores into the header) cannot hit SIGBUS.
            if os.path.exists(path) and os.path.getsize(path) < total:
                os.truncate(path, total)


def shm_path(name: str) -> str:
    return "/dev/shm" + name


def connect_error(device_id: str) -> str:
    with Host() as host, pytest.raises(SegmentError) as err:
        host.connect(device_id, timeout=0.5)
    return str(err.value)


def scan() -> list:
    registry = Registry()
    try:
        return registry.scan()
    finally:
        registry.close()


def assert_unclaimed(dev: Device) -> None:
    assert header(dev)["host_pid"] == 0, "a rejected segment must not be claimed"


def test_segment_with_wrong_magic_is_refused_naming_segment_and_magic(device):
    TRANSPORT_HEADER.write_field(device.segment.buf, 0, "magic", 0xDEADBEEF)
    text = connect_error(device.id)
    assert device.segment.name in text
    assert "magic" in text and "0xdeadbeef" in text.lower()
    assert_unclaimed(device)


def test_segment_with_wrong_protocol_version_is_refused_naming_both_versions(device):
    TRANSPORT_HEADER.write_field(device.segment.buf, 0, "version_major", 9)
    TRANSPORT_HEADER.write_field(device.segment.buf, 0, "version_minor", 3)
    text = connect_error(device.id)
    assert device.segment.name in text
    assert "version" in text and "9.3" in text and VERSION in text
    assert_unclaimed(device)


@pytest.mark.parametrize("state,said", [(DeviceState.STARTING, "the device is starting"),
                                        (DeviceState.STOPPED, "the device is stopped"),
                                        (7, "the device is in unknown state 7")])
def test_segment_of_a_device_that_is_not_running_is_refused(device, state, said):
    """§4.2: a host validates device_state == RUNNING before it claims."""
    TRANSPORT_HEADER.write_field(device.segment.buf, 0, "device_state", int(state))
    try:
        text = connect_error(device.id)
    finally:
        TRANSPORT_HEADER.write_field(device.segment.buf, 0, "device_state",
                                     int(DeviceState.RUNNING))
    assert device.segment.name in text and said in text and "not running" in text
    assert_unclaimed(device)


def test_segment_of_another_pid_than_its_registry_slot_is_refused(device):
    """§4.2: the segment's device_pid must be the pid of the slot it was found through."""
    other = os.getpid() + 1
    TRANSPORT_HEADER.write_field(device.segment.buf, 0, "device_pid", other)
    try:
        text = connect_error(device.id)
    finally:
        TRANSPORT_HEADER.write_field(device.segment.buf, 0, "device_pid", os.getpid())
    assert f"belongs to pid {other}, not to the registered device's pid {os.getpid()}" in text
    assert_unclaimed(device)


def test_segment_with_only_a_different_minor_version_is_accepted(namespace):
    with Device() as dev:
        dev.start("Minor", 1, 48000, 256)
        TRANSPORT_HEADER.write_field(dev.segment.buf, 0, "version_minor", 7)
        seg = Segment.attach(dev.segment.name)
        try:
            assert validate_segment(seg)["version_minor"] == 7
        finally:
            seg.close()


@pytest.mark.parametrize("keep", [0, 100, TRANSPORT_HEADER.size - 1],
                         ids=["empty", "inside-header", "header-minus-one"])
def test_segment_truncated_below_its_header_is_refused_as_truncated(device, keep):
    # Only the test's own mapping of the first page stays valid; nothing touches the rest.
    os.truncate(shm_path(device.segment.name), keep)
    text = connect_error(device.id)
    assert device.segment.name in text and "truncated" in text


@pytest.mark.parametrize("missing", [1, 4096, 200_000])
def test_segment_truncated_below_its_total_size_is_refused_as_truncated(device, missing):
    total = header(device)["total_size"]
    os.truncate(shm_path(device.segment.name), total - missing)
    text = connect_error(device.id)
    assert device.segment.name in text and "truncated" in text
    assert str(total) in text, "the error should give the size the header promises"


@pytest.mark.parametrize("field,value", [
    ("command_ring_offset", 10 ** 9),
    ("response_ring_offset", 12),  # inside the header
    ("audio_ring_offset", 100_001),  # not 64-byte aligned
    ("return_ring_offset", 0xFFFFFFC0),
    ("channels", 4000),  # the audio ring would run past the end
])
def test_segment_whose_rings_lie_outside_it_is_refused(device, field, value):
    TRANSPORT_HEADER.write_field(device.segment.buf, 0, field, value)
    text = connect_error(device.id)
    assert device.segment.name in text and "outside" in text
    assert_unclaimed(device)


@pytest.mark.parametrize("field,value", [("audio_frames", 1000), ("message_slots", 0)])
def test_segment_with_ring_sizes_that_are_not_powers_of_two_is_refused(device, field, value):
    TRANSPORT_HEADER.write_field(device.segment.buf, 0, field, value)
    text = connect_error(device.id)
    assert device.segment.name in text and "power" in text


def test_missing_segment_of_a_registered_device_is_reported_by_name(device):
    os.unlink(shm_path(device.segment.name))
    text = connect_error(device.id)
    assert device.segment.name in text and "does not exist" in text


def test_bad_segment_in_the_cli_host_exits_1_with_one_line(device, spawn):
    TRANSPORT_HEADER.write_field(device.segment.buf, 0, "magic", 0)
    with heartbeating(device):
        r = spawn.run("host", "--id", device.id, "--seconds", "0.2")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and device.segment.name in lines[0] and "magic" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_device_visible_in_the_registry_always_has_a_valid_segment(namespace):
    """A device process registers and stops 120 times while we watch the registry slots
    lock-free (as the protocol allows: acquire-load ``state``); every time a slot turns
    ACTIVE, the device's transport segment must already exist and be initialised (the slot
    is published ACTIVE only after the segment is ready)."""
    child = start_child("churn", "120", "10")
    registry = Registry()
    checked: set[tuple[int, int, int]] = set()
    violations = []
    deadline = time.monotonic() + 60
    try:
        while child.poll() is None:
            assert time.monotonic() < deadline, "the churning device did not finish"
            for slot in range(REGISTRY_SLOTS):
                owner = registry.owner(slot)  # (state, device_pid, generation)
                # Read twice: a consistent snapshot, not fields torn by a re-registration.
                if owner[0] != SlotState.ACTIVE or registry.owner(slot) != owner or \
                        (slot, *owner[1:]) in checked:
                    continue
                checked.add((slot, *owner[1:]))
                name = transport_name(namespace, slot, owner[1])
                try:
                    seg = Segment.attach(name)
                except SegmentError as exc:
                    error = str(exc)
                else:
                    try:
                        validate_segment(seg)
                        continue
                    except SegmentError as exc:
                        error = str(exc)
                    finally:
                        seg.close()
                # A failure only counts if the very same registration is still there: then
                # the slot was ACTIVE before its segment was ready.
                if registry.owner(slot) == owner:
                    violations.append(f"generation {owner[2]}: {error}")
            time.sleep(0)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        registry.close()
    assert child.returncode == 0, (out, err)
    assert len(checked) >= 60, "the watch saw too few registrations to be meaningful"
    assert not violations, f"{len(violations)} of {len(checked)} sightings: {violations[:3]}"


# ---- the registry segment ----------------------------------------------------------------


def make_registry(namespace: str, **fields) -> Segment:
    seg = Segment.create(registry_name(namespace), REGISTRY_SIZE)
    REGISTRY_HEADER.pack_into(seg.buf, 0, **{"version_major": 1, "header_size": 64,
                                              "slot_size": 256, "slot_count": 16, **fields})
    return seg


def test_registry_with_bad_magic_gives_a_clear_segment_error(namespace, spawn):
    seg = make_registry(namespace, magic=0x12345678)
    try:
        for make in (Registry, Host, Device):
            with pytest.raises(SegmentError) as err:
                make()
            text = str(err.value)
            assert registry_name(namespace) in text and "magic" in text
            assert "0x12345678" in text
        r = spawn.run("list")
        assert r.returncode == 1
        assert len(r.stderr.strip().splitlines()) == 1 and "magic" in r.stderr, r.stderr
    finally:
        seg.close()


def test_refusing_a_bad_registry_leaks_no_file_descriptors(namespace):
    seg = make_registry(namespace, magic=0x12345678)
    try:
        gc.collect()  # close what earlier tests left for the collector, so only ours counts
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            with pytest.raises(SegmentError):
                Registry()
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        seg.close()


def test_registry_with_another_protocol_version_is_refused(namespace):
    seg = make_registry(namespace, magic=0x47524C44, version_major=3, version_minor=1)
    try:
        with pytest.raises(SegmentError) as err:
            Registry()
        text = str(err.value)
        assert registry_name(namespace) in text and "3.1" in text and VERSION in text
    finally:
        seg.close()


def test_registry_with_a_foreign_slot_geometry_is_refused(namespace):
    seg = make_registry(namespace, magic=0x47524C44, slot_count=32)
    try:
        with pytest.raises(SegmentError, match="32 slots"):
            Registry()
    finally:
        seg.close()


def test_truncated_registry_is_refused(namespace):
    fd = os.open(shm_path(registry_name(namespace)), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 100)
    finally:
        os.close(fd)
    with pytest.raises(SegmentError) as err:
        Registry()
    assert registry_name(namespace) in str(err.value) and "100 bytes" in str(err.value)


# ---- device ids --------------------------------------------------------------------------

BAD_IDS = [
    ("", "empty"),
    ("   ", "empty"),
    ("x" * 64, "too long"),
    ("x" * 58, "too long"),  # no room left for every ":N" (ID_NAME_MAX_BYTES is 57)
    ("é" * 32, "too long"),  # 32 characters, 64 bytes of UTF-8
    ("Synth" + "€" * 20, "too long"),  # 25 characters, 65 bytes
    ("Synth/1", "'/'"),
    ("Syn\0th", "NUL"),
    ("Syn\nth", "U+000A"),
    ("Syn\x7fth", "U+007F"),
    ("Syn\x1bth", "U+001B"),
    ("Syn\tth", "U+0009"),
    ("Synth:70000", "65535"),
    ("a:b", "instance 'b' is not a number"),  # a colon comes only before the instance
    ("A:", "ends with ':'"),
    ("A:1:2", "more than one ':'"),
]


@pytest.mark.parametrize("bad,problem", BAD_IDS, ids=[p for _, p in BAD_IDS])
def test_device_start_rejects_bad_ids_naming_the_problem(namespace, bad, problem):
    with Device() as dev:
        with pytest.raises(ValueError) as err:
            dev.start(bad, 2)
        text = str(err.value)
        assert "device id" in text and problem in text, text
        assert "\n" not in text, "the error must be one line"
        assert not dev.running
    assert scan() == []
    assert not any("-dev" in n for n in os.listdir("/dev/shm")
                   if ("/" + n).startswith(namespace_prefix(namespace)))


def test_device_id_that_is_not_valid_utf8_is_rejected_naming_the_device_id(namespace):
    with Device() as dev, pytest.raises(ValueError) as err:
        dev.start("Synth\udcff", 2)  # what a non-UTF-8 command-line argument decodes to
    assert "device id" in str(err.value), str(err.value)


@pytest.mark.parametrize("good,expected", [
    ("Synthé", "Synthé:0"),
    ("x" * 57, "x" * 57 + ":0"),
    ("é" * 28 + "a", "é" * 28 + "a:0"),  # 57 bytes
    ("x" * 57 + ":65535", "x" * 57 + ":65535"),  # the longest id: 63 bytes
    ("X:007", "X:7"),  # normalised
    ("シンセ", "シンセ:0"),
    ("My Synth:7", "My Synth:7"),
])
def test_valid_unicode_and_boundary_ids_register(namespace, good, expected):
    with Device() as dev:
        assert dev.start(good, 1) == expected
        [info] = scan()
        assert info.id == expected
        assert len(expected.encode()) <= 63
