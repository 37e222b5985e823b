"""``discolink-bridge send`` and ``midi-monitor``, each in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from conftest import REPO
from helpers_ipc import by_id, wait_until

from bridge.transport import Host


class Monitor:
    """A ``midi-monitor`` process and the lines it has printed."""

    def __init__(self, spawn, *args: str, device_id: str = "Mon") -> None:
        self.proc = spawn.popen("midi-monitor", "--id", device_id, *args,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.id = wait_until(lambda: next((i for i in by_id(spawn.namespace)
                                           if i.startswith(device_id)), None),
                             10, "the midi-monitor device to register")

    def wait_lines(self, count: int, timeout: float = 10.0) -> None:
        """Wait until the monitor has printed ``count`` event lines (it prints an event in
        the block after it arrives, so this is a block period or two when all is well)."""
        wait_until(lambda: len(self.lines) >= count or self.proc.poll() is not None, timeout,
                   f"{count} event lines from midi-monitor (have {len(self.lines)})")

    def stop(self) -> tuple[list[str], str]:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        return self.lines, self.proc.stderr.read()

    def _read(self) -> None:  # keep the pipe drained: a full pipe would stall the device
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))


def test_send_reaches_the_monitor_with_offsets(spawn):
    mon = Monitor(spawn, "--blocksize", "256")
    r = spawn.run("send", "--id", mon.id, "--at-offset", "77",
                  "note_on channel=3 note=60 velocity=100", "control_change control=7 value=90",
                  "pitchwheel channel=1 pitch=-2000", "sysex data=(1,2,3)")
    assert r.returncode == 0, r.stderr
    assert "sent 4 message(s)" in r.stdout
    mon.wait_lines(4)
    lines, err = mon.stop()
    assert len(lines) == 4, (lines, err)
    assert all("offset    77:" in line for line in lines)
    assert "93 3c 64" in lines[0] and "note_on channel=3 note=60 velocity=100" in lines[0]
    assert "b0 07 5a" in lines[1] and "e1 30 30" in lines[2]  # -2000 + 8192 = 6192
    assert "f0 01 02 03 f7" in lines[3] and "sysex data=(1,2,3)" in lines[3]
    assert "4 IPC and 0 live events" in err


def test_monitor_json_lines_parse(spawn):
    mon = Monitor(spawn, "--json")
    r = spawn.run("send", "--id", mon.id, "start", "songpos pos=100", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["events"] == 2
    mon.wait_lines(2)
    lines, _ = mon.stop()
    got = [json.loads(line) for line in lines]
    assert [g["bytes"] for g in got] == ["fa", "f26400"]
    assert got[1]["message"] == "songpos pos=100" and got[1]["offset"] == 0


def test_send_to_a_claimed_device_names_the_holder(spawn):
    mon = Monitor(spawn)
    with Host() as holder:
        holder.connect(mon.id, "studio-A")
        r = spawn.run("send", "--id", mon.id, "note_on note=60")
        assert r.returncode == 1
        assert f"host pid {holder.pid}" in r.stderr and "'studio-A'" in r.stderr
        assert "--force" in r.stderr or "force" in r.stderr
        r = spawn.run("send", "--id", mon.id, "--force", "note_on note=61")
        assert r.returncode == 0, r.stderr
    mon.wait_lines(1)
    lines, _ = mon.stop()
    assert len(lines) == 1 and "note=61" in lines[0]


@pytest.mark.parametrize("args,text", [
    (["note_on note=999"], "message 1: 'note_on note=999'"),
    (["note_on note=60", "bogus"], "message 2: 'bogus'"),
    (["--at-offset", "-1", "note_on"], "--at-offset -1"),
    (["--id", "x" * 80, "note_on"], "too long"),
])
def test_send_usage_errors_exit_2_with_one_line(spawn, args, text):
    base = [] if "--id" in args else ["--id", "X"]
    r = spawn.run("send", *base, *args)
    assert r.returncode == 2
    assert text in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_send_to_a_missing_device_exits_1(spawn):
    r = spawn.run("send", "--id", "Nobody", "note_on")
    assert r.returncode == 1 and "Nobody" in r.stderr


def test_help_teaches_the_message_format():
    r = subprocess.run([sys.executable, "-m", "bridge", "send", "--help"], capture_output=True,
                       text=True, cwd=REPO)
    assert "note_on channel=0 note=60 velocity=100" in r.stdout and "--at-offset" in r.stdout
    r = subprocess.run([sys.executable, "-m", "bridge", "device", "--help"],
                       capture_output=True, text=True, cwd=REPO)
    assert "--midi-in" in r.stdout and "--sysex-limit" in r.stdout


def test_send_waits_for_room_instead_of_dropping_a_long_stream(spawn):
    """More messages than the command ring holds (1,024): all arrive, in order."""
    mon = Monitor(spawn, "--json")
    notes = [f"note_on channel={i % 16} note={i % 128} velocity=1" for i in range(1500)]
    r = spawn.run("send", "--id", mon.id, *notes)
    assert r.returncode == 0, r.stderr
    mon.wait_lines(1500)
    lines, _ = mon.stop()
    assert len(lines) == 1500
    assert [json.loads(line)["bytes"] for line in lines[:3]] == ["900001", "910101", "920201"]


def test_the_monitor_drops_a_sysex_longer_than_its_sysex_limit_and_counts_it(spawn):
    mon = Monitor(spawn, "--sysex-limit", "16")
    data = ",".join(str(i) for i in range(20))  # 22 bytes with F0 and F7
    r = spawn.run("send", "--id", mon.id, "sysex data=(1,2,3)", f"sysex data=({data})",
                  "note_on note=60 velocity=1")
    # the long one is refused by name (nothing dropped without a word): send exits 1
    assert r.returncode == 1, r.stderr
    assert "refused 1 of 3 command(s) (INVALID_ARGUMENT: SysEx of 22 bytes is over the " \
           "limit of 16; dropped)" in r.stderr, r.stderr
    wait_until(lambda: any("note_on" in line for line in mon.lines), 10, "the note")
    lines, err = mon.stop()
    assert len(lines) == 2 and "f0 01 02 03 f7" in lines[0], lines  # the short one passes
    assert "2 IPC and 0 live events" in err, err


def test_the_monitor_offers_ump_and_prints_a_midi2_note_as_midi1(spawn):
    """The UMP capability bit (§4.1) is set by the midi-monitor, which accepts UMP: a host
    that checks the bit before sending UMP must find it, and the note must come through."""
    from bridge.midi import ump
    from bridge.transport import cmd
    from bridge.transport.layout import Capability

    mon = Monitor(spawn)
    assert by_id(spawn.namespace)[mon.id].capabilities & Capability.UMP
    with Host() as host:
        conn = host.connect(mon.id, timeout=10)
        assert conn.capabilities & Capability.UMP
        for m in cmd.ump(list(ump.midi2_note_on(0, 60, 0xFFFF))):
            assert host.send_command(m)
        mon.wait_lines(1)
    lines, err = mon.stop()
    assert len(lines) == 1 and "note_on channel=0 note=60 velocity=127" in lines[0], (lines, err)
