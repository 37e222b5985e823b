"""netjack2 (jackd2's own network transport) carries a discoLink device to another machine.

Two network namespaces stand in for the two machines, a veth pair for the cable between them:

- namespace A ("the studio machine", 10.77.N.1): a jackd (dummy backend) with jackd2's
  ``netmanager`` loaded (the netjack2 master), the sine device, and ``jack-host`` whose output
  ports are connected to the master's send ports ``dlslave:to_slave_*``;
- namespace B ("the other machine", 10.77.N.2): ``jackd -d net -a 10.77.N.1`` (the netjack2
  slave: a JACK server whose driver is the network), where the audio appears as
  ``system:capture_*``, and ``jack_rec`` recording it.

Only UDP between the two jackds crosses the namespaces. Shared memory (/dev/shm, where discoLink
and JACK keep their segments and JACK its sockets) is not network-namespaced, so everything in A
sees the same discoLink registry. See docs/netjack.md.

Needs root (``ip netns add``); skipped, with the reason, where that is not permitted.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers_ipc import wait_until
from jack_server import reclaim_server, reclaim_stale_servers, remove_semaphores

RATE, PERIOD = 48000, 256
NET_LATENCY = 5  # jackd -d net -l: netjack2's default, in periods
REPO = Path(__file__).resolve().parent.parent
SLAVE = "dlslave"  # the slave's client name on the master (-n)


def run(*args: str, env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 8 * len(x)))
    return float(np.fft.rfftfreq(8 * len(x), 1 / RATE)[np.argmax(spec)])


class Machine:
    """One network namespace with its jackd."""

    def __init__(self, netns: str, server: str, address: str) -> None:
        self.netns, self.server, self.address = netns, server, address
        self.jackd: subprocess.Popen | None = None
        self.log = ""

    def env(self, extra: dict | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"JACK_DEFAULT_SERVER": self.server, "JACK_NO_START_SERVER": "1",
                    "PYTHONUNBUFFERED": "1"})
        env.update(extra or {})
        return env

    def exec(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args]

    def ports(self, *args: str) -> list[str] | None:
        r = run(*self.exec("jack_lsp", *args), env=self.env(), timeout=10)
        return r.stdout.splitlines() if r.returncode == 0 else None

    def start_jackd(self, *driver: str, logdir: Path) -> None:
        self.log = str(logdir / f"{self.server}.log")
        with open(self.log, "w") as err:
            self.jackd = subprocess.Popen(
                self.exec("jackd", "-n", self.server, "--no-realtime", *driver),
                stdout=err, stderr=subprocess.STDOUT, env=self.env())

    def wait_up(self, timeout: float = 15.0) -> None:
        def up():
            if self.jackd.poll() is not None:
                text = Path(self.log).read_text(errors="replace")[-1500:]
                hint = (" (JACK's server table in /dev/shm/jack-shm-registry holds 8 servers "
                        "and is full of killed ones)" if "Too many servers" in text else "")
                raise AssertionError(f"jackd {self.server} in {self.netns} exited with "
                                     f"{self.jackd.returncode}{hint}: {text}")
            return self.ports() is not None
        wait_until(up, timeout, f"jackd {self.server} in {self.netns}", interval=0.1)

    def terminate_jackd(self) -> None:
        if self.jackd is not None and self.jackd.poll() is None:
            self.jackd.terminate()  # SIGTERM, so that jackd leaves JACK's server table

    def wait_jackd(self) -> None:
        if self.jackd is None:
            return
        try:
            self.jackd.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.jackd.kill()
            self.jackd.wait(timeout=5)
            reclaim_server(self.server)  # a killed jackd keeps its entry in JACK's table
        remove_semaphores(self.server)



class NetjackPair:
    """Two namespaces joined by a veth pair; A runs the netjack2 master, B the slave."""

    def __init__(self, logdir: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.subnet = random.randint(1, 254)
        self.a = Machine(f"dl-a-{tag}", f"dlnja{tag}", f"10.77.{self.subnet}.1")
        self.b = Machine(f"dl-b-{tag}", f"dlnjb{tag}", f"10.77.{self.subnet}.2")
        self.veth = (f"dlva{tag}", f"dlvb{tag}")
        self.logdir = logdir
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def create_namespaces(self) -> None:
        r = run("ip", "netns", "add", self.a.netns)
        if r.returncode != 0:
            pytest.skip(f"`ip netns add` is not permitted here (uid {os.geteuid()}): "
                        f"{r.stderr.strip()}")
        self.namespaces.append(self.a.netns)
        for args in (
                ("ip", "netns", "add", self.b.netns),
                ("ip", "link", "add", self.veth[0], "netns", self.a.netns, "type", "veth",
                 "peer", "name", self.veth[1], "netns", self.b.netns),
                ("ip", "-n", self.a.netns, "addr", "add", f"{self.a.address}/24", "dev",
                 self.veth[0]),
                ("ip", "-n", self.b.netns, "addr", "add", f"{self.b.address}/24", "dev",
                 self.veth[1]),
                ("ip", "-n", self.a.netns, "link", "set", self.veth[0], "up"),
                ("ip", "-n", self.b.netns, "link", "set", self.veth[1], "up"),
                ("ip", "-n", self.a.netns, "link", "set", "lo", "up"),
                ("ip", "-n", self.b.netns, "link", "set", "lo", "up")):
            r = run(*args)
            assert r.returncode == 0, f"{' '.join(args)}: {r.stderr}"
            if args[2] == "add" and args[1] == "netns":
                self.namespaces.append(args[3])

    def start(self) -> NetjackPair:
        self.create_namespaces()
        # JACK's server table has 8 entries, and servers killed elsewhere (a crashed test
        # run) keep theirs: we need two free ones.
        reclaim_stale_servers()
        # A: the master. netmanager listens on netjack2's multicast address and UDP port 19000;
        # joining the multicast group fails without a multicast route ("Can't join multicast
        # group"), which does not matter: the slave names the master's address.
        self.a.start_jackd("-d", "dummy", "-r", str(RATE), "-p", str(PERIOD),
                           logdir=self.logdir)
        self.a.wait_up()
        r = run(*self.a.exec("jack_load", "netmanager"), env=self.a.env())
        assert r.returncode == 0 and "netmanager is running" in r.stdout, r.stdout + r.stderr
        # B: the slave, a jackd whose driver is the network (rate and period come from A)
        self.b.start_jackd("-d", "net", "-a", self.a.address, "-n", SLAVE, "-C", "2", "-P", "2",
                           "-i", "0", "-o", "0", "-l", str(NET_LATENCY), logdir=self.logdir)
        self.b.wait_up()
        wait_until(lambda: f"{SLAVE}:to_slave_1" in (self.a.ports() or []), 15,
                   f"the master's ports for the slave ({self.a.log}, {self.b.log})", 0.1)
        return self

    def popen(self, machine: Machine, *args: str, env: dict | None = None,
              **kw) -> subprocess.Popen:
        p = subprocess.Popen(machine.exec(*args), env=machine.env(env), cwd=REPO,
                             stdout=kw.pop("stdout", subprocess.PIPE),
                             stderr=kw.pop("stderr", subprocess.PIPE), text=True, **kw)
        self.procs.append(p)
        return p

    def stop_procs(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate(timeout=5)
        self.procs.clear()

    def close(self) -> None:
        try:
            self.stop_procs()
            # Unload the master first: a jackd that still runs netmanager waits 12 s for the
            # slave's client on SIGTERM (whichever side stops first); unloaded, both stop in 2 s
            if self.a.jackd is not None and self.a.jackd.poll() is None:
                try:
                    run(*self.a.exec("jack_unload", "netmanager"), env=self.a.env(),
                        timeout=10)
                except subprocess.TimeoutExpired:
                    pass  # then the SIGTERM below takes longer, and wait_jackd kills if need be
            for m in (self.b, self.a):
                m.terminate_jackd()
            for m in (self.b, self.a):
                m.wait_jackd()
        finally:
            for ns in reversed(self.namespaces):
                run("ip", "netns", "del", ns)


@pytest.fixture(scope="module")
def netjack(tmp_path_factory):
    if shutil.which("ip") is None:
        pytest.skip("`ip netns add` is not available: iproute2 is not installed")
    if shutil.which("jackd") is None:
        raise RuntimeError("jackd is not installed: run ./setup.sh (it installs jackd2)")
    pair = NetjackPair(tmp_path_factory.mktemp("netjack"))
    try:
        yield pair.start()
    finally:
        pair.close()
        left = run("ip", "netns", "list").stdout
        assert pair.a.netns not in left and pair.b.netns not in left, left


@pytest.fixture
def pair(netjack, namespace):
    """The module's namespaces and servers, with this test's processes stopped afterwards."""
    yield netjack
    netjack.stop_procs()


def bridge(pair: NetjackPair, namespace: str, *args: str,
           ready: str = "ready") -> subprocess.Popen:
    """``python -m bridge ARGS`` in namespace A, in this test's discoLink namespace."""
    p = pair.popen(pair.a, sys.executable, "-m", "bridge", *args,
                   env={"DISCOLINK_NAMESPACE": namespace})
    line = p.stdout.readline()
    assert ready in line, f"{args[0]}: {line!r} {p.stderr.read() if p.poll() is not None else ''}"
    return p


class JackClients:
    """JACK clients of this test on A's jackd (``src``: a click and MIDI out; ``probe``: inputs),
    stamping what they write and hear in A's frame clock. JACK clients talk to jackd over Unix
    sockets in /dev/shm, so this process reaches A's server from outside the namespace."""

    def __init__(self, server: str, inputs: tuple[str, ...] = ()) -> None:
        import jack

        self.src = jack.Client("nettest", servername=server, no_start_server=True)
        self.probe = jack.Client("netprobe", servername=server, no_start_server=True)
        self.click = self.src.outports.register("click")
        self.midi = self.src.midi_outports.register("midi")
        self.ins = {n: self.probe.inports.register(n) for n in inputs}
        self.queue: list[bytes] = []
        self.stamps: list[tuple[int, str]] = []  # (frame, what) of what src wrote
        self.onsets: dict[str, list[int]] = {n: [] for n in inputs}
        self._silent = dict.fromkeys(inputs, True)
        self.lock = threading.Lock()

        @self.src.set_process_callback
        def emit(frames: int) -> None:
            self.click.get_array().fill(0.0)
            self.midi.clear_buffer()
            with self.lock:
                todo, self.queue = self.queue, []
            t = self.src.last_frame_time
            for i, what in enumerate(todo):
                k = 17 + 31 * i
                if what == b"click":
                    self.click.get_array()[k] = 1.0
                else:
                    self.midi.write_midi_event(k, what)
                self.stamps.append((t + k, "click" if what == b"click" else "midi"))

        @self.probe.set_process_callback
        def listen(frames: int) -> None:
            t = self.probe.last_frame_time
            for name, port in self.ins.items():
                hot = np.flatnonzero(np.abs(port.get_array()) > 1e-4)
                if hot.size and self._silent[name]:
                    self.onsets[name].append(t + int(hot[0]))
                self._silent[name] = not hot.size

        self.src.activate()
        self.probe.activate()

    def send(self, *what: bytes) -> None:
        with self.lock:
            self.queue.extend(what)

    def close(self) -> None:
        for c in (self.src, self.probe):
            c.deactivate()
            c.close()


def test_the_sine_device_is_heard_on_the_other_side_of_netjack2(pair, namespace, tmp_path):
    """A: device -> jack-host -> dlslave:to_slave_*; B: system:capture_* -> jack_rec."""
    bridge(pair, namespace, "device", "--id", "NetSine", ready="device NetSine:0 ready")
    clients = JackClients(pair.a.server)
    try:
        bridge(pair, namespace, "jack-host", "--id", "NetSine:0", "--connect-out",
               f"{SLAVE}:to_slave_*", "--midi-in", "nettest:midi",
               ready="jack-host NetSine:0 ready: 2 JACK output port(s) at 48000 Hz")
        wait_until(lambda: all(p in "\n".join(pair.a.ports("-c") or []) for p in (
            "nettest:midi\n   discolink-host-NetSine:midi_in",
            "discolink-host-NetSine:out_2\n   dlslave:to_slave_2")), 10, "the JACK connections")
        clients.send(b"\x90\x45\x64")  # A4, velocity 100, into jack-host's MIDI in
        time.sleep(0.3)
        wav = tmp_path / "other-machine.wav"
        r = run(*pair.b.exec("jack_rec", "-f", str(wav), "-d", "2", "-b", "32",
                             "system:capture_1", "system:capture_2"), env=pair.b.env(),
                timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        clients.close()
    audio, rate = soundfile.read(wav, dtype="float32")
    assert rate == RATE and audio.shape[1] == 2 and len(audio) >= 1.9 * RATE
    # jack_rec records its inputs from its activation on, and connects them only afterwards
    # (on the slave a few periods later: zeros), each channel in its own period
    starts = [int(np.flatnonzero(np.abs(audio[:, c]) > 1e-3)[0]) for c in (0, 1)]
    assert max(starts) < RATE // 4, starts
    for c in (0, 1):
        x = audio[starts[c]:, c]
        assert peak_hz(x) == pytest.approx(440, abs=1)
        assert np.abs(x).max() == pytest.approx(0.25 * 100 / 127, abs=0.005)  # the synth's level
        frames = x[: len(x) // PERIOD * PERIOD].reshape(-1, PERIOD)
        rms = np.sqrt((frames ** 2).mean(axis=1))  # a full-scale sine: RMS 0.139
        assert rms.min() > 0.1, f"a gap in channel {c + 1} (period {int(rms.argmin())})"


def test_netjack2_latency_in_the_masters_frame_clock(pair, namespace):
    """B loops its inputs back to its outputs; A measures, in its own frame clock, a click
    through netjack2 and back (netjack2 alone), and a note through the sine device, jack-host,
    netjack2 and back (the whole path). Expected: l periods for netjack2's round trip,
    plus fill x block for the device (demand clock, fill 2).

    Source and probe are two JACK clients: with one client both writing into the loop and
    reading from it, the graph has a cycle and JACK adds one period to break it."""
    for i in (1, 2):
        r = run(*pair.b.exec("jack_connect", f"system:capture_{i}", f"system:playback_{i}"),
                env=pair.b.env())
        assert r.returncode == 0, r.stderr
    bridge(pair, namespace, "device", "--id", "NetLoop", ready="device NetLoop:0 ready")
    clients = JackClients(pair.a.server, inputs=("sine", "click"))
    try:
        bridge(pair, namespace, "jack-host", "--id", "NetLoop:0", "--connect-out",
               f"{SLAVE}:to_slave_1", "--midi-in", "nettest:midi", ready="ready")
        clients.src.connect("nettest:click", f"{SLAVE}:to_slave_2")
        clients.probe.connect(f"{SLAVE}:from_slave_1", "netprobe:sine")
        clients.probe.connect(f"{SLAVE}:from_slave_2", "netprobe:click")
        wait_until(lambda: "nettest:midi\n   discolink-host-NetLoop:midi_in" in "\n".join(
            pair.a.ports("-c") or []), 10, "the MIDI connection")
        time.sleep(0.2)
        log_from = os.path.getsize(pair.a.log)
        for _ in range(5):
            clients.send(b"click", b"\x90\x45\x64")
            time.sleep(0.15)
            clients.send(b"\x80\x45\x00")
            time.sleep(0.15)
        time.sleep(0.3)
        with open(pair.a.log, errors="replace") as log:
            log.seek(log_from)
            # jackd (A) logs one "Process error" per cycle its graph did not finish in time
            xruns = log.read().count("ProcessGraphAsyncMaster: Process error")
    finally:
        clients.close()
    clicks = [t for t, what in clients.stamps if what == "click"]
    notes = [t for t, what in clients.stamps if what == "midi"][::2]  # the note ons
    assert len(clicks) == len(notes) == 5

    def trips(sent: list[int], heard: list[int]) -> list[int | None]:
        """Each send's round trip: the first onset after it, within 20 periods (None: lost)."""
        return [next((o - t for o in heard if 0 <= o - t < 20 * PERIOD), None) for t in sent]

    net = trips(clicks, clients.onsets["click"])
    whole = [w - 1 if w is not None else None for w in trips(notes, clients.onsets["sine"])]
    print(f"netjack2 round trip {net} frames, device + netjack2 round trip {whole} frames, "
          f"{xruns} xrun cycles on A")
    # Exactly l periods, for every click no xrun touched: on a loaded machine a cycle where
    # netjack2's client on A (the slave's proxy) was not finished in time delays or loses
    # what it carries (seen: 1536 for 1280, and a lost click, with "JackEngine::XRun:
    # client = dlslave was not finished" in A's log). Each xrun cycle of A may disturb one
    # click, never more.
    late = [n for n in net if n != NET_LATENCY * PERIOD]
    assert len(late) <= xruns, (
        f"netjack2 round trips {net} (expected {NET_LATENCY * PERIOD}) with {xruns} xrun "
        f"cycles on A; onsets {clients.onsets}")
    # The sine starts at phase 0 (first sample 0, hence the - 1). The demand clock keeps 2 blocks
    # queued, so a note waits for the blocks in the ring when it arrives: 2 periods, exactly, on a
    # quiet machine. Under load (a test suite beside us) the ring's fill at that moment can be one
    # block off either way: a device that has just refilled puts the note one block later, one
    # that is a block behind puts it one block sooner (CI saw 256, 512, 512, 512, 512). Never
    # beyond that but for a note an xrun of A disturbed, and the typical (median) note still
    # takes exactly fill x block.
    device = sorted(w - NET_LATENCY * PERIOD for w in whole if w is not None)
    odd = [d for d in device if d not in (PERIOD, 2 * PERIOD, 3 * PERIOD)]
    assert len(odd) + (5 - len(device)) <= xruns, (whole, xruns, clients.onsets)
    assert device[len(device) // 2] == 2 * PERIOD, (device, clients.onsets)
