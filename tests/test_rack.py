"""The rack server (``discolink-bridge rack FILE``) as users run it: its own process, device
processes under it, signals, the control socket, and what it leaves behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from helpers_ipc import by_id, wait_until

from bridge.transport import Host, cmd, shm
from bridge.transport.clock import realtime

DLSINE = REPO / "build" / "plugins" / "DLSine.vst3"


class RackProcess:
    def __init__(self, spawn, path: Path, state_dir: Path, *extra: str) -> None:
        self.spawn = spawn
        self.popen = spawn.popen("rack", str(path), "--state-dir", str(state_dir), *extra,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.popen.stdout, self.out), (self.popen.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")),
                             daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60.0, stream: str = "out") -> str:
        lines = self.out if stream == "out" else self.err
        return wait_until(lambda: next((ln for ln in lines if text in ln), None), timeout,
                          f"{text!r} from the rack (stdout {self.out[-5:]}, stderr "
                          f"{self.err[-8:]})")

    def status(self) -> dict:
        r = self.spawn.run("status", "--json")
        assert r.returncode == 0, r.stderr
        return {d["name"]: d for d in json.loads(r.stdout)["devices"]}

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(timeout=30)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BASIC = """\
name: basic
defaults:
  sample_rate: 48000
  block_size: 256
devices:
  - id: Alpha
    kind: synth
    restart: always
  - id: Beta
    kind: synth
    restart: on-failure
"""


def test_starting_and_stopping_a_rack_leaves_nothing_behind(spawn, tmp_path):
    rack = RackProcess(spawn, write(tmp_path / "rack.yaml", BASIC), tmp_path / "state")
    rack.wait_for("rack basic ready: 2 device(s)")
    devices = by_id(spawn.namespace)
    assert set(devices) == {"Alpha:0", "Beta:0"}
    status = rack.status()
    assert status["Alpha"]["state"] == "running" and status["Alpha"]["pid"] == \
        devices["Alpha:0"].pid
    rack.stop()
    assert rack.popen.returncode == 0
    assert "rack basic stopped" in "".join(rack.out)
    assert shm.list_names(shm.namespace_prefix(spawn.namespace)) == [], "left in /dev/shm"
    for pid in (devices["Alpha:0"].pid, devices["Beta:0"].pid):
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    r = spawn.run("status")
    assert r.returncode == 1 and "no rack is running" in r.stderr


WINDOW_S = 3.0  # each read window; Alpha comes back in about 1 s


def _read_beta(host: Host, seconds: float, tick=None) -> int:
    """Read Beta in real time, as an audio thread does (SCHED_FIFO, like `discolink-bridge
    host`), for ``seconds``; the number of short reads (underruns)."""
    out = np.zeros((2, 256), np.float32)
    period = 256 / 48000
    underruns = k = 0
    start = time.monotonic()
    with realtime():
        while time.monotonic() - start < seconds:
            if host.receive_audio(out) < 256:
                underruns += 1
            if tick is not None and k % 20 == 0:
                tick()
            k += 1
            time.sleep(max(0.0, start + k * period - time.monotonic()))
    return underruns


def test_a_killed_device_comes_back_fast_with_its_id_and_the_others_do_not_notice(
        spawn, tmp_path):
    """Alpha is killed -9 while a host streams Beta: Alpha comes back with its id, and Beta's
    stream goes on (same process, still connected, never restarted). Its underruns in the
    window of the kill and restart are compared with a window of the same length just before
    it, in the same run: a 2-core machine shared with other jobs has underruns of its own,
    and a restart that disturbed Beta (a sweep of its slot, a stall of the rack) would show as
    a gap of hundreds of blocks, not a handful."""
    rack = RackProcess(spawn, write(tmp_path / "rack.yaml", BASIC), tmp_path / "state")
    rack.wait_for("ready")
    try:
        beta = by_id(spawn.namespace)["Beta:0"].pid
        with Host() as host:
            host.connect("Beta:0")
            _read_beta(host, 0.5)  # the link in its steady state
            baseline = _read_beta(host, WINDOW_S)
            victim = by_id(spawn.namespace)["Alpha:0"].pid
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            back: list[float] = []

            def look() -> None:
                info = by_id(spawn.namespace).get("Alpha:0")
                if not back and info is not None and info.pid != victim:
                    back.append(time.monotonic() - killed_at)

            during = _read_beta(host, WINDOW_S, look)
            assert host.connected, "Beta's host lost its device while Alpha restarted"
        assert back and back[0] < WINDOW_S, "Alpha:0 did not come back within the window"
        assert by_id(spawn.namespace)["Beta:0"].pid == beta
        limit = 3 * baseline + 10  # 10 blocks = 53 ms: noise, never a stalled device
        assert during <= limit, (
            f"Beta's host saw {during} underruns while Alpha restarted, {baseline} in the "
            f"{WINDOW_S:.0f} s before (limit {limit})")
        status = rack.status()
        assert status["Alpha"]["restarts"] == 1 and status["Beta"]["restarts"] == 0
    finally:
        rack.stop()


def test_a_device_that_keeps_crashing_is_marked_failed_and_the_rest_runs(spawn, tmp_path):
    rack = RackProcess(spawn, write(tmp_path / "rack.yaml", BASIC), tmp_path / "state")
    rack.wait_for("ready")
    try:
        for _ in range(5):
            info = wait_until(lambda: by_id(spawn.namespace).get("Alpha:0"), 20, "Alpha")
            os.kill(info.pid, signal.SIGKILL)
            def gone(p=info.pid) -> bool:
                now = by_id(spawn.namespace).get("Alpha:0")
                return now is None or now.pid != p

            wait_until(gone, 20, "Alpha to go")
        rack.wait_for("Alpha FAILED", stream="err", timeout=30)
        status = rack.status()
        assert status["Alpha"]["state"] == "failed"
        assert status["Beta"]["state"] == "running"
    finally:
        rack.stop()


def test_reload_adds_and_removes_without_touching_the_rest(spawn, tmp_path):
    path = write(tmp_path / "rack.yaml", BASIC)
    rack = RackProcess(spawn, path, tmp_path / "state")
    rack.wait_for("ready")
    try:
        beta_pid = by_id(spawn.namespace)["Beta:0"].pid
        write(path, BASIC.replace("  - id: Alpha\n    kind: synth\n    restart: always\n", "")
              + "  - id: Gamma\n    kind: synth\n")
        r = spawn.run("rack", "reload")
        assert r.returncode == 0, r.stderr
        assert "1 added, 1 removed, 0 restarted, 1 untouched" in r.stdout
        devices = by_id(spawn.namespace)
        assert set(devices) == {"Beta:0", "Gamma:0"}
        assert devices["Beta:0"].pid == beta_pid  # untouched
        write(path, "name: basic\ndevices:\n  - id: Beta\n    kind: synth\n    restrat: x\n")
        os.kill(rack.popen.pid, signal.SIGHUP)  # an invalid file: rejected, nothing changes
        rack.wait_for("reload rejected, the rack is unchanged", stream="err")
        assert set(by_id(spawn.namespace)) == {"Beta:0", "Gamma:0"}
    finally:
        rack.stop()


@pytest.mark.skipif(not DLSINE.exists(), reason="run ./setup.sh: it builds the test plugins")
def test_status_counts_the_nan_blocks_a_plugin_device_silenced(spawn, tmp_path):
    """DLSine's ``fault`` parameter makes it output NaN: the device silences those blocks
    and the rack's status (JSON and table) counts them, without --monitor."""
    path = write(tmp_path / "rack.yaml", f"""\
name: nan
devices:
  - id: Bad
    kind: plugin
    plugin: {DLSINE}
    params: {{fault: 1}}
  - id: Good
    kind: synth
""")
    rack = RackProcess(spawn, path, tmp_path / "state")
    rack.wait_for("ready")
    try:
        with Host() as host:
            host.connect("Bad:0")
            out = np.zeros((2, 256), np.float32)
            for _ in range(150):  # past a publication (every 64 blocks)
                wait_until(lambda: host.receive_audio(out) == 256, 5, "a block from Bad")
                assert not out.any() and np.isfinite(out).all()
        status = rack.status()
        assert status["Bad"]["nonfinite_blocks"] >= 64, status["Bad"]
        assert status["Good"]["nonfinite_blocks"] == 0
        table = spawn.run("status").stdout
        assert "NAN" in table.splitlines()[1], table
        row = next(ln for ln in table.splitlines() if ln.startswith("Bad "))
        assert f" {status['Bad']['nonfinite_blocks']} " in row, table
    finally:
        rack.stop()


@pytest.mark.skipif(not DLSINE.exists(), reason="run ./setup.sh: it builds the test plugins")
def test_state_saved_on_stop_comes_back_with_the_same_ids_and_values(spawn, tmp_path):
    path = write(tmp_path / "rack.yaml", f"""\
name: keep
devices:
  - id: Lead
    kind: plugin
    plugin: {DLSINE}
    params: {{gain: 0.3}}
""")
    state = tmp_path / "state"
    rack = RackProcess(spawn, path, state)
    rack.wait_for("ready")
    with Host() as host:
        host.connect("Lead:0", "session-7")
        host.request(cmd.set_parameter("tune_st", 4.0))
    rack.stop()
    assert json.loads((state / "rack.json").read_text())["device_ids"] == {"Lead": "Lead:0"}
    # the file's params would set gain again; drop them to see the saved state alone
    write(path, path.read_text().replace("    params: {gain: 0.3}\n", ""))
    rack = RackProcess(spawn, path, state)
    rack.wait_for("ready")
    try:
        with Host() as host:
            host.connect("Lead:0")
            got = {n: cmd.decode(host.request(cmd.get_parameter(n)))["value"]
                   for n in ("gain", "tune_st")}
        assert got["gain"] == pytest.approx(0.3, abs=1e-3)
        assert got["tune_st"] == pytest.approx(4.0, abs=0.03)
    finally:
        rack.stop()


def test_invalid_rack_file_starts_nothing_and_exits_2(spawn, tmp_path):
    path = write(tmp_path / "bad.yaml", "name: bad\ndevices:\n  - id: X\n    kind: synth\n"
                                        "    channels: 13\n")
    r = spawn.run("rack", str(path))
    assert r.returncode == 2
    assert f"{path}:5:15: devices[0].channels" in r.stderr, r.stderr
    assert by_id(spawn.namespace) == {}
    r = spawn.run("rack", "check", str(path))
    assert r.returncode == 2
    r = spawn.run("rack", "check", str(write(tmp_path / "ok.yaml", BASIC)))
    assert r.returncode == 0 and "ok, rack 'basic' with 2 device(s)" in r.stdout
    for target, what in ((tmp_path, "is a folder"), (tmp_path / "none.yaml", "does not exist")):
        for args in (("rack", str(target)), ("rack", "check", str(target))):
            r = spawn.run(*args)
            assert r.returncode == 2 and r.stderr == (
                f"discolink-bridge rack: error: rack file {target} {what}; give a YAML file "
                "such as configs/demo.yaml\n"), r.stderr


def test_schema_is_json_schema_for_editors(spawn):
    r = spawn.run("rack", "schema")
    schema = json.loads(r.stdout)
    assert schema["additionalProperties"] is False
    assert "devices" in schema["properties"]
