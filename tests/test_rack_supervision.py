"""The rack supervises whatever happens: a killed rack takes its devices with it, a hung
device is noticed and restarted, crash-looping devices never make the rack deaf to SIGTERM or
``status``, and a reload never stalls supervision or applies in part (issue 11, items 6-10).

Everything here is real processes: ``discolink-bridge rack`` under test, its device
processes, signals (SIGKILL, SIGSTOP), /proc and /dev/shm."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from helpers_ipc import by_id, wait_until
from test_rack import BASIC, RackProcess, write

from bridge.rack.supervisor import ask, control_socket_path
from bridge.transport import shm
from bridge.transport.layout import HEARTBEAT_STALE_S
from bridge.transport.shm import pid_alive


def _kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gone_within(pids: list[int], timeout: float) -> float:
    """Seconds until every pid is dead (zombies count as dead); fails after ``timeout``,
    naming what the survivors were doing."""
    start = time.monotonic()
    try:
        wait_until(lambda: not any(pid_alive(p) for p in pids), timeout,
                   f"pids {pids} to die", interval=0.01)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: " + "; ".join(_proc_state(p) for p in pids)) from None
    return time.monotonic() - start


def _proc_state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        wchan = [Path(t, "wchan").read_text() for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return f"{pid} gone"
    keep = [ln for ln in status if ln.startswith(("State", "PPid", "SigPnd", "ShdPnd",
                                                   "SigBlk", "SigCgt"))]
    return f"{pid}: {', '.join(keep)}, threads in {wchan}"


def with_big_gamma(patterns: int) -> str:
    """BASIC and one more synth, Gamma, listening to ``patterns`` midi_in patterns."""
    return BASIC + "  - id: Gamma\n    kind: synth\n    midi_in:\n" + "".join(
        f"      - 'no such port {i:06d}'\n" for i in range(patterns))


def test_devices_die_within_a_second_of_their_rack_being_killed(spawn, tmp_path):
    rack = RackProcess(spawn, write(tmp_path / "rack.yaml", BASIC), tmp_path / "state")
    rack.wait_for("rack basic ready")
    pids = [d.pid for d in by_id(spawn.namespace).values()]
    assert len(pids) == 2
    try:
        rack.popen.kill()
        rack.popen.wait()
        took = _gone_within(pids, 1.0)
        # they stopped as on SIGTERM: their slots and segments are gone, only the registry
        # (the rack's to remove) is left, and the next rack starts every device at once
        assert shm.list_names(shm.namespace_prefix(spawn.namespace)) == \
            [shm.registry_name(spawn.namespace)], f"after {took:.2f} s"
    finally:
        _kill_all(pids)
    rack = RackProcess(spawn, write(tmp_path / "rack.yaml", BASIC), tmp_path / "state")
    rack.wait_for("rack basic ready")
    status = rack.status()
    assert {n: (d["state"], d["id"], d["restarts"]) for n, d in status.items()} == \
        {"Alpha": ("running", "Alpha:0", 0), "Beta": ("running", "Beta:0", 0)}
    rack.stop()
    assert shm.list_names(shm.namespace_prefix(spawn.namespace)) == []


def test_a_new_rack_replaces_the_devices_a_killed_rack_left_behind(spawn, tmp_path):
    """A device that was stopped (SIGSTOP) when its rack was killed can't act on the
    parent-death signal; the next rack in the namespace finds it and replaces it."""
    rack = RackProcess(spawn, write(tmp_path / "rack.yaml", BASIC), tmp_path / "state")
    rack.wait_for("rack basic ready")
    old = {i: d.pid for i, d in by_id(spawn.namespace).items()}
    try:
        os.kill(old["Alpha:0"], signal.SIGSTOP)
        rack.popen.kill()
        rack.popen.wait()
        _gone_within([old["Beta:0"]], 5.0)
        assert pid_alive(old["Alpha:0"])  # the leftover
        rack = RackProcess(spawn, tmp_path / "rack.yaml", tmp_path / "state")
        line = rack.wait_for("left running", stream="err", timeout=20)
        assert f"pid {old['Alpha:0']}" in line, line
        rack.wait_for("rack basic ready")
        assert not pid_alive(old["Alpha:0"])
        now = by_id(spawn.namespace)
        assert set(now) == {"Alpha:0", "Beta:0"} and now["Alpha:0"].pid != old["Alpha:0"]
        assert rack.status()["Alpha"]["state"] == "running"
        rack.stop()
    finally:
        _kill_all(old.values())


def test_one_rack_per_namespace_and_a_stale_socket_is_replaced_only_when_dead(
        spawn, tmp_path):
    path = write(tmp_path / "rack.yaml", "name: one\ndevices:\n  - id: A\n    kind: synth\n")
    sock_path = control_socket_path(spawn.namespace)
    # a socket that answers connects is not stale, even with no rack's lock behind it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(1)
    try:
        r = spawn.run("rack", str(path), "--state-dir", str(tmp_path / "s"))
        assert r.returncode == 1 and "a rack already runs" in r.stderr, r.stderr
        assert by_id(spawn.namespace) == {}
    finally:
        listener.close()  # now nobody listens: the file is stale, and a rack replaces it
    assert sock_path.exists()
    first = RackProcess(spawn, path, tmp_path / "s")
    first.wait_for("rack one ready")
    second = spawn.run("rack", str(path), "--state-dir", str(tmp_path / "s2"))
    assert second.returncode == 1 and "a rack already runs in namespace" in second.stderr
    assert f"pid {first.popen.pid}" in second.stderr, second.stderr
    assert first.status()["A"]["state"] == "running"  # its socket was left alone
    first.stop()
    assert not sock_path.exists()


def test_a_stopped_device_shows_hung_then_is_restarted_with_its_id(spawn, tmp_path):
    rack = RackProcess(spawn, write(tmp_path / "rack.yaml", BASIC), tmp_path / "state")
    rack.wait_for("rack basic ready")
    victim = by_id(spawn.namespace)["Alpha:0"].pid
    try:
        os.kill(victim, signal.SIGSTOP)
        stopped_at = time.monotonic()

        def alpha() -> dict:  # asked in-process: a `status` process takes longer to start
            return next(d for d in ask(spawn.namespace, "status")["devices"]
                        if d["name"] == "Alpha")

        hung = wait_until(lambda: alpha()["state"] == "hung", HEARTBEAT_STALE_S + 5,
                          "status to say hung", interval=0.02)
        assert hung and time.monotonic() - stopped_at >= HEARTBEAT_STALE_S
        rack.wait_for("Alpha", stream="err")
        assert any("hung: no heartbeat" in ln for ln in rack.err), rack.err

        def back() -> dict | None:
            a = rack.status()["Alpha"]
            return a if a["state"] == "running" and a["pid"] != victim else None

        came = wait_until(back, 20, "Alpha to come back", interval=0.1)
        assert came["id"] == "Alpha:0" and came["restarts"] == 1
        assert came["last_exit"].startswith("hung: no heartbeat")
        assert not pid_alive(victim)
        assert by_id(spawn.namespace)["Alpha:0"].pid == came["pid"]
        assert rack.status()["Beta"]["restarts"] == 0
    finally:
        _kill_all([victim])
        rack.stop()


CRASHING = """\
name: crashing
devices:
"""


def test_sigterm_stops_a_crash_looping_rack_at_once_and_status_answers_meanwhile(
        spawn, tmp_path):
    """Six devices that fail at every start (a JACK server that does not exist), restarted
    without end: the rack answers status, says why they fail, and stops on SIGTERM."""
    text = CRASHING + "".join(f"  - id: J{i}\n    kind: jack\n    restart: always\n"
                              f"    jack_server: nope-{spawn.namespace}\n" for i in range(6))
    rack = RackProcess(spawn, write(tmp_path / "rack.yaml", text), tmp_path / "state")
    rack.wait_for("rack crashing ready", timeout=60)
    wait_until(lambda: all(d["restarts"] >= 1 for d in rack.status().values()), 30,
               "every device to be restarted", interval=0.1)
    status = rack.status()
    for d in status.values():
        assert "cannot reach JACK server" in d["last_error"], d
    assert any("cannot reach JACK server" in ln for ln in rack.err), rack.err[-5:]
    table = spawn.run("status").stdout
    assert "J0: last ended with exit code 1: " in table, table
    started = time.monotonic()
    rack.popen.send_signal(signal.SIGTERM)
    rack.popen.wait(timeout=30)
    took = time.monotonic() - started
    assert rack.popen.returncode == 0
    assert took < 3.0, f"the rack took {took:.1f} s to stop"
    assert shm.list_names(shm.namespace_prefix(spawn.namespace)) == []


def test_a_device_configuration_too_big_for_argv_is_started_on_reload(spawn, tmp_path):
    """8,000 midi_in patterns (240 KB, near the rack file's 256 KiB cap) are 16,000
    arguments; the rack hands every device's command line over in a memfd, so none of it
    goes through argv."""
    path = write(tmp_path / "rack.yaml", BASIC)
    rack = RackProcess(spawn, path, tmp_path / "state")
    rack.wait_for("rack basic ready")
    try:
        write(path, with_big_gamma(8_000))
        r = spawn.run("rack", "reload", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 added, 0 removed, 0 restarted, 2 untouched" in r.stdout
        gamma = wait_until(lambda: rack.status()["Gamma"]["state"] == "running" and
                           rack.status()["Gamma"], 60, "Gamma to run", interval=0.2)
        cmdline = Path(f"/proc/{gamma['pid']}/cmdline").read_bytes()
        assert len(cmdline) < 200  # 16,000 arguments (240 KB) and none went through argv
    finally:
        rack.stop()


def test_a_reload_that_fails_part_way_leaves_the_rack_as_it_was_and_says_why(
        spawn, tmp_path):
    """The new file changes Alpha and adds Gamma, whose log can't be opened (a folder is in
    its place): nothing is stopped, nothing started, and the reply names the file."""
    path = write(tmp_path / "rack.yaml", BASIC)
    state = tmp_path / "state"
    rack = RackProcess(spawn, path, state)
    rack.wait_for("rack basic ready")
    try:
        before = {i: d.pid for i, d in by_id(spawn.namespace).items()}
        (state / "Gamma.log").mkdir()
        write(path, BASIC.replace("  - id: Alpha\n    kind: synth\n",
                                  "  - id: Alpha\n    kind: synth\n    channels: 1\n")
              + "  - id: Gamma\n    kind: synth\n")
        # `rack reload` relays the rack's refusal (the log path is checked as the rack prepares) ...
        r = spawn.run("rack", "reload")
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"{state / 'Gamma.log'}" in r.stderr, r.stderr
        # ... and the rack, asked directly (a client that skips the check), refuses it too.
        reply = ask(spawn.namespace, "reload", timeout=120)
        text = reply.get("message") or reply.get("error") or ""
        assert "reload rejected, the rack is unchanged" in text, reply
        assert f"{state / 'Gamma.log'}" in text, reply
        assert {i: d.pid for i, d in by_id(spawn.namespace).items()} == before
        status = rack.status()
        assert set(status) == {"Alpha", "Beta"}
        assert all(d["state"] == "running" and d["restarts"] == 0 for d in status.values())
        assert not any(" stopped" in ln or "terminat" in ln for ln in rack.err), rack.err
    finally:
        rack.stop()


def test_a_reload_that_only_renames_the_rack_restarts_nothing(spawn, tmp_path):
    path = write(tmp_path / "rack.yaml", BASIC)
    state = tmp_path / "state"
    rack = RackProcess(spawn, path, state)  # --state-dir: the folder does not move
    rack.wait_for("rack basic ready")
    try:
        before = {i: d.pid for i, d in by_id(spawn.namespace).items()}
        write(path, BASIC.replace("name: basic", "name: renamed"))
        r = spawn.run("rack", "reload")
        assert r.returncode == 0 and "0 added, 0 removed, 0 restarted, 2 untouched" in \
            r.stdout, r.stdout
        assert {i: d.pid for i, d in by_id(spawn.namespace).items()} == before
        assert json.loads(spawn.run("status", "--json").stdout)["rack"] == "renamed"
        assert json.loads((state / "rack.json").read_text()) == {
            "rack": "renamed", "device_ids": {"Alpha": "Alpha:0", "Beta": "Beta:0"}}
        assert not any("stopped" in ln for ln in rack.err + rack.out), rack.err
    finally:
        rack.stop()


def test_a_rename_that_would_move_the_state_folder_is_rejected(spawn, tmp_path):
    """Without state_dir the rack's name picks its state folder: a running rack keeps its
    folder, so such a reload is refused, saying so, rather than leaving ids and states in
    the old folder."""
    path = write(tmp_path / "rack.yaml", BASIC)
    env = spawn.env()
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    rack = subprocess.Popen([*spawn_argv(), "rack", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    spawn.procs.append(rack)
    try:
        for line in rack.stdout:
            if "rack basic ready" in line:
                break
        before = {i: d.pid for i, d in by_id(spawn.namespace).items()}
        assert set(before) == {"Alpha:0", "Beta:0"}
        write(path, BASIC.replace("name: basic", "name: renamed"))
        r = subprocess.run([*spawn_argv(), "rack", "reload"], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2, r.stdout + r.stderr  # a configuration error
        folder = tmp_path / "xdg" / "discolink-bridge"
        assert "reload rejected, the rack is unchanged: it would move the state folder " \
               f"from {folder / 'basic'} to {folder / 'renamed'}" in r.stderr, r.stderr
        assert {i: d.pid for i, d in by_id(spawn.namespace).items()} == before
    finally:
        rack.send_signal(signal.SIGTERM)
        rack.wait(timeout=30)


def spawn_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "bridge"]


def test_status_and_restarts_go_on_while_a_reload_reads_its_file(spawn, tmp_path):
    """Ordering, not timing: the rack file is swapped for a FIFO, so the reload's read of it
    blocks until the test writes the new text. Meanwhile ``status`` answers and a killed
    device comes back, both before the reload ends (it is prepared off the loop)."""
    path = write(tmp_path / "rack.yaml", BASIC)
    rack = RackProcess(spawn, path, tmp_path / "state")
    rack.wait_for("rack basic ready")
    try:
        path.unlink()
        os.mkfifo(path)
        replies: list[dict] = []
        reload = threading.Thread(target=lambda: replies.append(
            ask(spawn.namespace, "reload", timeout=300)))
        reload.start()
        victim = by_id(spawn.namespace)["Alpha:0"].pid
        time.sleep(0.3)  # the request is in: the rack is blocked opening the FIFO
        os.kill(victim, signal.SIGKILL)
        status = ask(spawn.namespace, "status")
        time.sleep(0.2)  # a "reloaded" line the rack printed before it answered is read by now

        def reloading() -> bool:
            return not replies and not any("reloaded" in ln for ln in rack.err)

        assert reloading(), "the reload ended before status answered"
        assert {d["name"] for d in status["devices"]} == {"Alpha", "Beta"}

        def back() -> bool:
            info = by_id(spawn.namespace).get("Alpha:0")
            return info is not None and info.pid != victim

        wait_until(back, 30, "Alpha to come back")
        assert reloading(), "the reload ended before Alpha came back"
        with open(path, "w") as fifo:  # the reload's read returns: it goes on and applies
            fifo.write(with_big_gamma(2))
        reload.join(timeout=300)
        assert replies[0]["ok"] and "1 added" in replies[0]["message"], replies
    finally:
        rack.stop()
