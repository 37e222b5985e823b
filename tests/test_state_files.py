"""Plugin state and rack state are never overwritten or silently lost (issue 11, items 4 and
5): locks on a device's ``--state`` file and on a rack's state folder, refusals before any
work starts, failed saves said at once and in the exit code, atomic writes, and a rack.json
that is checked before it is obeyed. Real device and rack processes, built-in plugins (nothing
to install)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid

import pytest
from helpers_ipc import by_id, read_blocks, wait_until
from test_rack import RackProcess, write

from bridge.adapters import persist
from bridge.adapters.plugin_device import write_state_file
from bridge.rack.config import parse_rack
from bridge.transport import Host, cmd, shm

REVERB = ("--plugin", "builtin:Reverb", "--blocksize", "256")


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("discolink-bridge")]


# ---- device --state ---------------------------------------------------------------------------

def test_a_state_file_in_a_missing_folder_is_refused_at_start_with_exit_2(spawn, tmp_path):
    missing = tmp_path / "missing" / "dir" / "s.json"
    r = spawn.run("device", *REVERB, "--state", str(missing))
    assert r.returncode == 2, r.stderr
    assert error_lines(r.stderr) == [
        f"discolink-bridge device: error: --state {missing}: its folder {missing.parent} does "
        "not exist; create it first"]
    assert by_id(spawn.namespace) == {}  # refused before registering anything
    r = spawn.run("device", *REVERB, "--state", str(tmp_path))
    assert r.returncode == 2 and "is a folder" in r.stderr, r.stderr


def test_a_second_device_with_the_same_state_file_is_refused_while_the_first_runs(spawn,
                                                                                  tmp_path):
    state = tmp_path / "s.json"
    first = spawn.device(*REVERB, "--state", str(state), device_id="One")
    r = spawn.run("device", *REVERB, "--state", str(state), "--id", "Two")
    assert r.returncode == 1, r.stderr
    assert error_lines(r.stderr) == [
        f"discolink-bridge device: --state {state} is in use by process {first.pid} (lock "
        f"{state}.lock); two devices must not share a state file"]
    assert set(by_id(spawn.namespace)) == {"One:0"}
    first.stop()
    assert first.proc.returncode == 0, first.stderr
    again = spawn.device(*REVERB, "--state", str(state), device_id="Two")  # free once it ends
    again.stop()


def test_a_save_that_fails_while_running_is_said_at_once_and_the_exit_code_is_1(spawn,
                                                                                tmp_path):
    folder = tmp_path / "states"
    folder.mkdir()
    state = folder / "s.json"
    dev = spawn.device(*REVERB, "--state", str(state), device_id="Fx")
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(iter(dev.proc.stderr.readline, "")),
                     daemon=True).start()
    shutil.rmtree(folder)  # the disk goes away under the running device
    with Host() as host:
        host.connect(dev.id)
        host.request(cmd.set_parameter("room_size", 0.25))
        read_blocks(host, 16, 256, 2)  # the snapshot is taken between blocks
        line = wait_until(lambda: next((ln for ln in err if "could not save" in ln), None),
                          10, "the failed save on stderr while the device runs")
    assert dev.proc.poll() is None  # said at once, not at exit
    assert line.strip() == (f"discolink-bridge device: could not save --state {state}: No "
                            "such file or directory")
    dev.proc.send_signal(15)
    assert dev.proc.wait(timeout=10) == 1
    summary = wait_until(lambda: next((ln for ln in err if "save(s)" in ln), None), 5,
                         "the summary line")
    assert f"of --state {state} failed; the file is out of date" in summary


def test_state_writes_are_atomic_and_synced(tmp_path, monkeypatch):
    """A crash between writing and renaming leaves the old file whole and no temporary file;
    a completed write is fsynced (file and folder) before it counts."""
    state = tmp_path / "s.json"
    write_state_file(state, "Fx:0", {"v": 1})
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(persist.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_state_file(state, "Fx:0", {"v": 2})
    assert json.loads(state.read_text())["chain"] == {"v": 2}
    assert len(synced) == 2  # the data, then the rename in the folder

    def crash(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persist.os, "replace", crash)
    with pytest.raises(OSError):
        write_state_file(state, "Fx:0", {"v": 3})
    assert json.loads(state.read_text())["chain"] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


# ---- racks --------------------------------------------------------------------------------------

PLUGIN_RACK = """\
name: shared
devices:
  - id: Room
    kind: plugin
    plugin: builtin:Reverb
"""


def test_a_second_rack_on_the_same_state_folder_is_refused_and_the_first_keeps_running(
        spawn, tmp_path):
    """Two racks from one file in two namespaces would share a state folder, and the last
    to stop would overwrite the other's plugin states."""
    path = write(tmp_path / "rack.yaml", PLUGIN_RACK)
    state = tmp_path / "state"
    first = RackProcess(spawn, path, state)
    other = f"t{uuid.uuid4().hex[:10]}"
    try:
        first.wait_for("ready")
        r = subprocess.run([sys.executable, "-m", "bridge", "--namespace", other, "rack",
                            str(path), "--state-dir", str(state)],
                           env=spawn.env(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert error_lines(r.stderr) == [
            f"discolink-bridge rack: state folder {state} is in use by process "
            f"{first.popen.pid} (lock {state}/rack.lock): another rack keeps its state "
            "there; give this rack its own state_dir (or --state-dir)"]
        assert shm.list_names(shm.namespace_prefix(other)) == []
        assert first.status()["Room"]["state"] == "running"
    finally:
        first.stop()
        for name in shm.list_names(shm.namespace_prefix(other)):
            shm.unlink(name)


def test_a_poisoned_rack_json_is_reported_and_rebuilt_not_obeyed(spawn, tmp_path):
    path = write(tmp_path / "rack.yaml", """\
name: ids
devices:
  - {id: Alpha, kind: synth}
  - {id: Beta, kind: synth}
""")
    state = tmp_path / "state"
    state.mkdir()
    # both devices told to take Beta:0: obeyed, one of them would crash-loop to FAILED
    (state / "rack.json").write_text(json.dumps(
        {"rack": "ids", "device_ids": {"Alpha": "Beta:0", "Beta": "Beta:0"}}))
    rack = RackProcess(spawn, path, state)
    try:
        rack.wait_for("ready")
        status = rack.status()
        assert {n: (d["id"], d["state"]) for n, d in status.items()} == {
            "Alpha": ("Alpha:0", "running"), "Beta": ("Beta:0", "running")}
        line = rack.wait_for("rack.json", stream="err")
        assert "device 'Alpha': 'Beta:0' is not an id Alpha:N; ignored" in line
        assert json.loads((state / "rack.json").read_text())["device_ids"] == {
            "Alpha": "Alpha:0", "Beta": "Beta:0"}
    finally:
        rack.stop()


@pytest.mark.parametrize("content, problem", [
    ("not json", "not readable as JSON"),
    ('["a list"]', "no device_ids mapping"),
    ('{"device_ids": {"S": "S"}}', "'S' is not an id S:N"),
    ('{"device_ids": {"S": "S:-1"}}', "'S:-1' is not an id S:N"),
    ('{"device_ids": {"S": 7}}', "7 is not an id S:N"),
    ('{"device_ids": {"X:1": "X:2"}}', "'X:2' differs from the file's 'X:1'"),
    ('{"device_ids": {"S": "X:1"}}', "'X:1' is not an id S:N"),
])
def test_every_kind_of_bad_rack_json_entry_is_left_out(tmp_path, content, problem):
    from bridge.rack.statefolder import read_saved_ids

    config = parse_rack("name: r\ndevices:\n  - {id: S, kind: synth}\n  - {id: X:1, kind: "
                        "synth}\n", environ={"XDG_STATE_HOME": str(tmp_path)})
    path = tmp_path / "rack.json"
    path.write_text(content)
    ids, problems = read_saved_ids(path, config)
    assert "S" not in ids and ids.get("X:1", "X:1") == "X:1"
    assert len(problems) == 1 and problem in problems[0], problems
    path.write_text('{"device_ids": {"S": "S:007", "Gone": "Gone:0"}}')
    assert read_saved_ids(path, config) == ({"S": "S:7"}, [])


def test_an_invalid_file_given_to_rack_reload_exits_2_and_changes_nothing(spawn, tmp_path):
    path = write(tmp_path / "rack.yaml", "name: rl\ndevices:\n  - {id: Alpha, kind: synth}\n")
    rack = RackProcess(spawn, path, tmp_path / "state")
    try:
        rack.wait_for("ready")
        write(path, "name: rl\ndevices:\n  - {id: Alpha, kind: synth, channels: 13}\n")
        r = spawn.run("rack", "reload")
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert f"{path}:3:40: devices[0].channels: must be 1..12, got 13" in r.stderr
        assert "not reloaded, the rack runs as it was" in r.stderr
        assert rack.status()["Alpha"]["state"] == "running"
    finally:
        rack.stop()
