"""The registry: 16 slots, instance ids, dead-process cleanup, namespaces and permissions.

Every device here is a real OS process (forked workers calling Device.start, or the
``python -m bridge device`` CLI); the registry is the real shared-memory segment.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import re
import selectors
import signal
import subprocess
import time

import pytest
from helpers_ipc import by_id, device_segment, scan, segment_exists

from bridge.transport import Device, DeviceNotFound, Host, Registry, RegistryError
from bridge.transport.host import validate_segment
from bridge.transport.layout import TRANSPORT_HEADER, SlotState
from bridge.transport.registry import RegistryFullError
from bridge.transport.shm import (
    Segment,
    list_names,
    namespace_prefix,
    registry_name,
    unlink,
)

FULL = "registry full (16 slots)"


# ---- 16 slots ------------------------------------------------------------------------------


def _race_member(namespace, name, barrier, results, stop) -> None:
    """A forked process: register at the barrier, report, then stay alive until ``stop``."""
    pid = os.getpid()
    try:
        device = Device(namespace)
    except Exception as exc:
        barrier.abort()
        results.put(("error", pid, f"{type(exc).__name__}: {exc}"))
        return
    try:
        try:
            barrier.wait(timeout=60)
            device_id = device.start(name, channels=1)
        except RegistryFullError as exc:
            results.put(("full", pid, str(exc)))
            return
        except Exception as exc:
            results.put(("error", pid, f"{type(exc).__name__}: {exc}"))
            return
        results.put(("ok", pid, device_id))
        while not stop.value:
            device.heartbeat()  # a live device keeps its slot fresh
            time.sleep(0.05)
    finally:
        device.close()


def _expected_segments(namespace: str, devices) -> list[str]:
    return sorted([registry_name(namespace), *(device_segment(d) for d in devices)])


def test_seventeen_processes_racing_for_16_slots_get_race_0_to_15_and_one_registry_full_error(
        spawn, namespace):
    ctx = multiprocessing.get_context("fork")
    racers = 17
    # `stop` is a lock-free flag, not an Event: setting an Event would wait forever for
    # the member we kill -9 below to acknowledge the wake-up.
    barrier, results, stop = ctx.Barrier(racers), ctx.Queue(), ctx.RawValue("b", 0)
    procs = [ctx.Process(target=_race_member, args=(namespace, "Race", barrier, results, stop),
                         daemon=True) for _ in range(racers)]
    try:
        for p in procs:
            p.start()
        reports = []
        for _ in range(racers):
            try:
                reports.append(results.get(timeout=60))
            except queue.Empty:
                pytest.fail(f"only {len(reports)} of {racers} racers reported: {reports}")
        errors = [r for r in reports if r[0] == "error"]
        assert not errors, f"racers failed unexpectedly: {errors}"
        ok = {device_id: pid for kind, pid, device_id in reports if kind == "ok"}
        full = [text for kind, _, text in reports if kind == "full"]

        # Exactly 16 winners, with unique ids that are exactly the 16 lowest instances.
        assert len(ok) == 16, f"{len(ok)} racers registered: {sorted(ok)}"
        assert set(ok) == {f"Race:{i}" for i in range(16)}
        assert len(set(ok.values())) == 16
        # Exactly one loser, told clearly why.
        assert len(full) == 1, f"expected one registry-full error, got {full}"
        assert FULL in full[0], full[0]

        # The registry agrees with what the racers were told, one slot each.
        devices = scan(namespace)
        assert {d.id: d.pid for d in devices} == ok
        assert sorted(d.slot for d in devices) == list(range(16))
        # Nothing corrupted: exactly one valid transport segment per device, owned by it,
        # and none left behind by the loser.
        assert list_names(namespace_prefix(namespace)) == _expected_segments(namespace, devices)
        for d in devices:
            seg = Segment.attach(device_segment(d), TRANSPORT_HEADER.size)
            try:
                assert validate_segment(seg)["device_pid"] == d.pid
            finally:
                seg.close()

        # A 17th device from the CLI is refused with exit code 1 and one clear stderr line.
        r = spawn.run("device", "--id", "Race")
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert FULL in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "ready" not in r.stdout
        # ... and so is one with another name, through the API.
        with Device(namespace) as other, pytest.raises(RegistryFullError, match=re.escape(FULL)):
            other.start("Other", channels=1)

        # The failures changed nothing: same 16 devices, same slots, same generations.
        assert scan(namespace) == devices
        assert list_names(namespace_prefix(namespace)) == _expected_segments(namespace, devices)

        # When one member dies, its slot and its instance number are free again: the next
        # `Race` gets exactly the lowest free instance (no scan in between: registering
        # reclaims dead slots by itself).
        victim = next(p for p in procs if p.pid == ok["Race:7"])
        victim.kill()
        victim.join(timeout=10)
        heir = spawn.device("--channels", "1", device_id="Race")
        assert heir.id == "Race:7"
        after = {d.id: d.pid for d in scan(namespace)}
        assert after == {**ok, "Race:7": heir.pid}
    finally:
        stop.value = 1
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def _read_ready_lines(procs: list[subprocess.Popen], timeout: float) -> dict[int, str]:
    """First stdout line of every process, waiting at most ``timeout`` in total."""
    lines: dict[int, str] = {}
    with selectors.DefaultSelector() as sel:
        for i, p in enumerate(procs):
            sel.register(p.stdout, selectors.EVENT_READ, i)
        deadline = time.monotonic() + timeout
        while len(lines) < len(procs):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [procs[i].args for i in range(len(procs)) if i not in lines]
                pytest.fail(f"no ready line within {timeout:.0f} s from {missing}")
            for key, _ in sel.select(left):
                lines[key.data] = key.fileobj.readline()
                sel.unregister(key.fileobj)
    return lines


def test_sixteen_differently_named_cli_devices_started_together_all_register(spawn, namespace):
    names = [f"Solo{k}" for k in range(16)]
    procs = [spawn.popen("device", "--id", name, "--channels", "1", stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True) for name in names]
    lines = _read_ready_lines(procs, timeout=120)
    for k, name in enumerate(names):
        p = procs[k]
        err = p.stderr.read() if p.poll() is not None else ""
        assert lines[k].startswith(f"device {name}:0 ready"), (lines[k], err)

    devices = scan(namespace)
    assert {d.id: d.pid for d in devices} == {f"{n}:0": p.pid for n, p in zip(names, procs,
                                                                               strict=True)}
    assert sorted(d.slot for d in devices) == list(range(16))
    assert list_names(namespace_prefix(namespace)) == _expected_segments(namespace, devices)

    for p in procs:
        p.send_signal(signal.SIGTERM)
    for name, p in zip(names, procs, strict=True):
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, (name, err)
        assert f"device {name}:0 stopped" in out
    assert scan(namespace) == []
    assert list_names(namespace_prefix(namespace)) == [registry_name(namespace)]


# ---- instance ids --------------------------------------------------------------------------


def test_bare_name_gets_the_lowest_free_instance_and_a_stopped_instance_is_reused(
        spawn, namespace):
    first = spawn.device("--channels", "1", device_id="Name")
    second = spawn.device("--channels", "1", device_id="Name")
    assert (first.id, second.id) == ("Name:0", "Name:1")

    first.stop()
    assert first.proc.returncode == 0
    again = spawn.device("--channels", "1", device_id="Name")
    assert again.id == "Name:0", "Name:0 was free again and is the lowest free instance"
    third = spawn.device("--channels", "1", device_id="Name")
    assert third.id == "Name:2"

    assert {d.id: d.pid for d in scan(namespace)} == {
        "Name:0": again.pid, "Name:1": second.pid, "Name:2": third.pid}


def test_name_with_instance_gets_exactly_that_instance(spawn, namespace):
    five = spawn.device("--channels", "1", device_id="Name:5")
    assert five.id == "Name:5"
    bare = spawn.device("--channels", "1", device_id="Name")
    assert bare.id == "Name:0", "an explicit Name:5 does not move the lowest free instance"
    assert {d.id: d.pid for d in scan(namespace)} == {"Name:5": five.pid, "Name:0": bare.pid}


def test_asking_for_a_taken_instance_fails_with_an_error_naming_the_holder_pid(
        spawn, namespace):
    holder = spawn.device("--channels", "1", device_id="Name:3")
    before = scan(namespace)

    r = spawn.run("device", "--id", "Name:3")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "'Name:3'" in r.stderr and f"pid {holder.pid}" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "ready" not in r.stdout

    with Device(namespace) as dev, pytest.raises(RegistryError, match=f"pid {holder.pid}"):
        dev.start("Name:3", channels=1)

    # The holder is untouched: still running, still registered, its segment still alone.
    assert holder.proc.poll() is None
    assert scan(namespace) == before
    assert list_names(namespace_prefix(namespace)) == _expected_segments(namespace, before)


# ---- dead-process cleanup ------------------------------------------------------------------


def test_next_scan_reclaims_the_slot_of_a_device_killed_with_sigkill(spawn, namespace):
    dev = spawn.device("--channels", "1", device_id="Victim")
    info = by_id(namespace)["Victim:0"]
    seg = device_segment(info)
    registry = Registry(namespace)  # opening the registry does not scan it
    try:
        dev.kill9()
        # Nobody has looked yet: the slot still says ACTIVE and the segment is still there.
        assert registry.slot_state(info.slot) == SlotState.ACTIVE
        assert segment_exists(seg)

        assert registry.scan() == []
        assert registry.slot_state(info.slot) == SlotState.FREE
        assert not segment_exists(seg), f"{seg} of the dead device was not unlinked"
    finally:
        registry.close()

    # The freed slot is taken by the next device, under a new generation.
    heir = spawn.device("--channels", "1", device_id="Heir")
    new = by_id(namespace)["Heir:0"]
    assert (new.slot, new.pid) == (info.slot, heir.pid)
    assert new.generation == info.generation + 1
    assert list_names(namespace_prefix(namespace)) == _expected_segments(namespace, [new])


# ---- namespaces and permissions ------------------------------------------------------------


def test_device_in_one_namespace_is_invisible_to_hosts_and_registries_of_another(
        spawn, namespace):
    dev = spawn.device("--channels", "1", device_id="Iso")
    other = f"{namespace}x"
    try:
        assert [d.id for d in scan(namespace)] == ["Iso:0"]
        assert scan(other) == []
        with Host(other) as host:
            assert host.available_devices() == []
            with pytest.raises(DeviceNotFound):
                host.connect("Iso:0")
        r = spawn.run("--namespace", other, "list", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == []

        # The other namespace has its own numbering: the same name is Iso:0 there too.
        with Device(other) as twin:
            assert twin.start("Iso", channels=1) == "Iso:0"
            assert by_id(other)["Iso:0"].pid == os.getpid()
            assert by_id(namespace)["Iso:0"].pid == dev.pid
            assert list_names(namespace_prefix(other)) == sorted(
                [registry_name(other), twin.segment.name])
    finally:
        for name in list_names(namespace_prefix(other)):
            unlink(name)


def test_segments_are_mode_0600_and_named_with_uid_and_namespace(spawn, namespace):
    old = os.umask(0)  # even a permissive umask must not widen the segments
    try:
        dev = spawn.device("--channels", "1", device_id="Perm")
    finally:
        os.umask(old)
    info = by_id(namespace)["Perm:0"]
    uid = os.getuid()
    registry = f"/discolink-{uid}-{namespace}-registry"
    transport = f"/discolink-{uid}-{namespace}-dev{info.slot}-{dev.pid}"
    assert list_names(namespace_prefix(namespace)) == sorted([registry, transport])
    for name in (registry, transport):
        st = os.stat("/dev/shm" + name)
        assert st.st_mode & 0o777 == 0o600, f"{name} has mode {st.st_mode & 0o777:o}"
        assert st.st_uid == uid
