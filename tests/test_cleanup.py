"""`discolink-bridge cleanup` and Registry.sweep: what dead devices leave in /dev/shm goes,
live devices and other namespaces stay, and a registry removed under an open handle is
followed. Devices are real OS processes; the registry is the real shared-memory segment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers_ipc import by_id, device_segment, read_blocks, segment_exists

from bridge.transport import Device, Host, Registry
from bridge.transport.layout import Mode
from bridge.transport.shm import Segment, namespace_names, registry_name, transport_name, unlink


def cleanup(spawn, *args: str) -> list[dict]:
    r = spawn.run("cleanup", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def swept(namespace: str, live=(), freed=(), removed=()) -> dict:
    """One namespace's object in ``cleanup --json``, for a sound registry."""
    return {"namespace": namespace, "live": list(live), "freed": list(freed),
            "removed": list(removed), "corrupt": None, "mapped": {}}


def test_cleanup_removes_what_a_killed_device_left_and_keeps_a_live_device(spawn, namespace):
    gone = spawn.device("--channels", "1", device_id="Gone")
    kept = spawn.device("--channels", "1", device_id="Kept")
    infos = by_id(namespace)
    gone_seg, kept_seg = device_segment(infos["Gone:0"]), device_segment(infos["Kept:0"])
    gone.kill9()  # its slot and segment stay behind: nobody has scanned since
    orphan = transport_name(namespace, 9, 2**22 + 1)  # a segment no slot owns (pid > pid_max)
    Segment.create(orphan, 4096).close()

    [plan] = cleanup(spawn, "--dry-run")
    assert plan == swept(namespace, ["Kept:0"], ["Gone:0"], sorted([gone_seg, orphan]))
    assert segment_exists(gone_seg) and segment_exists(orphan)  # a dry run touches nothing

    r = spawn.run("cleanup")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"namespace {namespace!r}: removed 2 segment(s) (")
    assert "freed the slot(s) of dead device(s) Gone:0; kept 1 live device(s) (Kept:0)" \
        in r.stdout
    assert namespace_names(namespace) == sorted([registry_name(namespace), kept_seg])
    with Host() as host:  # the live device is untouched
        host.connect("Kept:0")
        assert read_blocks(host, 4).shape == (1, 4 * 256) and host.connected

    kept.stop()  # it removes its own segment and frees its slot; the registry stays
    assert namespace_names(namespace) == [registry_name(namespace)]
    assert cleanup(spawn) == [swept(namespace, removed=[registry_name(namespace)])]
    assert namespace_names(namespace) == []
    r = spawn.run("cleanup")
    assert r.stdout == f"nothing to clean: no registry for namespace {namespace!r}\n"


def test_cleanup_of_a_namespace_leaves_one_whose_name_it_prefixes_alone(spawn, namespace):
    """Namespace "X" and "X-b": the names of the second start with the first's prefix."""
    other = f"{namespace}-b"
    try:
        Registry(namespace).close()  # an empty registry
        with Device(other) as dev:
            dev.start("Neighbour", 0, 48000, 256, Mode.MIDI)
            mine = sorted([registry_name(other), dev.segment.name])
            assert cleanup(spawn) == [swept(namespace, removed=[registry_name(namespace)])]
            assert namespace_names(other) == mine
            everything = {s["namespace"]: s for s in cleanup(spawn, "--all")}
            assert everything[other] == swept(other, ["Neighbour:0"])
            assert namespace_names(other) == mine and by_id(other)["Neighbour:0"]
    finally:
        for name in namespace_names(other):
            unlink(name)


def test_a_device_that_opened_a_registry_before_cleanup_removed_it_registers_in_the_new_one(
        spawn, namespace):
    with Device() as dev:  # opens the (new, empty) registry
        assert cleanup(spawn) == [swept(namespace, removed=[registry_name(namespace)])]
        dev.start("Late", 0, 48000, 256, Mode.MIDI)
        r = spawn.run("list", "--json")  # another process must find it
        assert r.returncode == 0, r.stderr
        assert [d["id"] for d in json.loads(r.stdout)] == ["Late:0"]


def test_looking_into_an_unused_namespace_leaves_nothing_behind(spawn, namespace):
    """list, cleanup, and a host or send aimed at a device that isn't there: no registry is
    made just to look (a typo in a namespace used to leave one in /dev/shm for good)."""
    r = spawn.run("list")
    assert r.stdout == f"no devices in namespace {namespace!r}\n"
    assert spawn.run("list", "--json").stdout == "[]\n"
    assert cleanup(spawn) == []
    for args in (("host", "--id", "Nobody:0", "--seconds", "0.1"),
                 ("send", "--id", "Nobody:0", "note_on note=60")):
        r = spawn.run(*args)
        assert r.returncode == 1 and "no device 'Nobody:0'" in r.stderr, r.stderr
    with Host() as host:
        assert host.available_devices() == []
    assert namespace_names(namespace) == []
    with Device() as dev, Host() as host:  # a host made before the first device finds it
        dev.start("First", 0, 48000, 256, Mode.MIDI)
        assert [d.id for d in host.available_devices()] == ["First:0"]


# ---- corrupt registries ------------------------------------------------------------------


def _plant(namespace: str, content: bytes) -> str:
    """A registry object of another size or with bad magic, as a crash or a stranger leaves."""
    name = registry_name(namespace)
    with open("/dev/shm" + name, "wb") as f:
        f.write(content)
    return name


def test_cleanup_all_goes_on_past_corrupt_registries_and_force_removes_them(spawn, namespace):
    short, garbage, sound = namespace, f"{namespace}-rnd", f"{namespace}-ok"
    try:
        _plant(short, b"\x01" * 7)
        _plant(garbage, bytes(range(256)) * 16 + bytes(64))  # 4160 bytes, bad magic
        Registry(sound).close()
        orphan = transport_name(sound, 3, 2**22 + 1)
        Segment.create(orphan, 4096).close()
        r = spawn.run("cleanup", "--all", "--json")
        assert r.returncode == 1  # corrupt registries were left: said, and not success
        found = {s["namespace"]: s for s in json.loads(r.stdout)}
        assert found[sound] == swept(sound, removed=sorted([orphan, registry_name(sound)]))
        assert "is 7 bytes, expected 4160" in found[short]["corrupt"]
        assert "bad magic" in found[garbage]["corrupt"]
        assert found[short]["removed"] == found[garbage]["removed"] == []
        for ns in (short, garbage):  # each named on stderr, with the way out
            assert f"namespace {ns!r}: registry" in r.stderr
        assert r.stderr.count("cleanup --force") == 2 and "Traceback" not in r.stderr
        assert namespace_names(short) == [registry_name(short)]  # nothing removed unasked

        r = spawn.run("list")  # a command in the corrupt namespace: one line, the way out
        assert r.returncode == 1 and r.stderr.count("\n") == 1
        assert "cleanup --force" in r.stderr

        r = spawn.run("cleanup", "--force", "--dry-run")
        assert r.returncode == 0 and "would remove 1 segment(s) (registry)" in r.stdout
        assert namespace_names(short) == [registry_name(short)]
        r = spawn.run("cleanup", "--all", "--force")
        assert r.returncode == 0, r.stderr
        assert namespace_names(short) == namespace_names(garbage) == []
        spawn.device("--mode", "midi", device_id="After").stop()  # the namespace works
    finally:
        for ns in (short, garbage, sound):
            for name in namespace_names(ns):
                unlink(name)


def test_cleanup_force_keeps_a_corrupt_registry_that_a_live_process_maps(spawn, namespace):
    """Another program's object of our name, in use: removing it would pull it from under
    that program, so --force keeps it and names the pid (protocol.md §3.6)."""
    name = _plant(namespace, b"\x00" * 100)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import mmap, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
         "m = mmap.mmap(fd, 100); print('mapped', flush=True); sys.stdin.read()",
         "/dev/shm" + name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "mapped\n"
        r = spawn.run("cleanup", "--force")
        assert r.returncode == 1
        assert f"still mapped by pid {holder.pid}" in r.stderr
        assert namespace_names(namespace) == [name]
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    r = spawn.run("cleanup", "--force")  # its user gone, it goes
    assert r.returncode == 0 and namespace_names(namespace) == []


def test_read_only_commands_create_no_folder_and_no_registry(spawn, namespace, monkeypatch):
    """status asks a rack that isn't there, list looks at a registry a creator never sized:
    neither leaves anything new behind (the runtime folder, a sized registry)."""
    missing = Path(f"/tmp/{namespace}-nonexistent")  # short: a socket path has a limit
    assert not missing.exists()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(missing / "run"))
    for verb in ("status", "reload"):
        r = spawn.run("rack", verb) if verb == "reload" else spawn.run(verb)
        assert r.returncode == 1 and "no rack is running" in r.stderr, r.stderr
    assert not missing.exists()
    name = _plant(namespace, b"")  # a registry whose creator died before sizing it
    r = spawn.run("list")
    assert r.stdout == f"no devices in namespace {namespace!r}\n", r.stderr
    assert os.stat("/dev/shm" + name).st_size == 0 and namespace_names(namespace) == [name]
