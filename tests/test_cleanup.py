"""`discolink-bridge cleanup` and Registry.sweep: what dead devices leave in /dev/shm goes,
live devices and other namespaces stay, and a registry removed under an open handle is
followed. Devices are real OS processes; the registry is the real shared-memory segment."""

from __future__ import annotations

import json

from helpers_ipc import by_id, device_segment, read_blocks, segment_exists

from bridge.transport import Device, Host, Registry
from bridge.transport.layout import Mode
from bridge.transport.shm import Segment, namespace_names, registry_name, transport_name, unlink


def cleanup(spawn, *args: str) -> list[dict]:
    r = spawn.run("cleanup", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_cleanup_removes_what_a_killed_device_left_and_keeps_a_live_device(spawn, namespace):
    gone = spawn.device("--channels", "1", device_id="Gone")
    kept = spawn.device("--channels", "1", device_id="Kept")
    infos = by_id(namespace)
    gone_seg, kept_seg = device_segment(infos["Gone:0"]), device_segment(infos["Kept:0"])
    gone.kill9()  # its slot and segment stay behind: nobody has scanned since
    orphan = transport_name(namespace, 9, 2**22 + 1)  # a segment no slot owns (pid > pid_max)
    Segment.create(orphan, 4096).close()

    [plan] = cleanup(spawn, "--dry-run")
    assert plan == {"namespace": namespace, "live": ["Kept:0"], "freed": ["Gone:0"],
                    "removed": sorted([gone_seg, orphan])}
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
    assert cleanup(spawn) == [{"namespace": namespace, "live": [], "freed": [],
                               "removed": [registry_name(namespace)]}]
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
            assert cleanup(spawn) == [{"namespace": namespace, "live": [], "freed": [],
                                       "removed": [registry_name(namespace)]}]
            assert namespace_names(other) == mine
            everything = {s["namespace"]: s for s in cleanup(spawn, "--all")}
            assert everything[other] == {"namespace": other, "live": ["Neighbour:0"],
                                         "freed": [], "removed": []}
            assert namespace_names(other) == mine and by_id(other)["Neighbour:0"]
    finally:
        for name in namespace_names(other):
            unlink(name)


def test_a_device_that_opened_a_registry_before_cleanup_removed_it_registers_in_the_new_one(
        spawn, namespace):
    with Device() as dev:  # opens the (new, empty) registry
        assert cleanup(spawn) == [{"namespace": namespace, "live": [], "freed": [],
                                   "removed": [registry_name(namespace)]}]
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
