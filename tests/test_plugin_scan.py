"""``discolink-bridge plugin scan`` and ``plugin info``, run for real: the project's VST3
plugins (DLSine, DLSine12, the Dragonfly reverbs), and broken bundles compiled here with gcc
whose library crashes (abort, SIGSEGV) or hangs (pause) as soon as it is loaded. No mock of
pedalboard or of the probe processes.
"""

from __future__ import annotations

import json
import os
import platform
import pty
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from helpers_ipc import drain_pty

from bridge.adapters import plugin_scan

PLUGINS = REPO / "build" / "plugins"
DLSINE = PLUGINS / "DLSine.vst3"
GOOD = {  # name: (instrument?, inputs, outputs)
    "DLSine": (True, 0, 2),
    "DLSine12": (True, 0, 12),
    "Dragonfly Room Reverb": (False, 2, 2),
    "Dragonfly Hall Reverb": (False, 2, 2),
    "Dragonfly Plate Reverb": (False, 2, 2),
    "Dragonfly Early Reflections": (False, 2, 2),
    # the discoLink DAW plugins (plugins/discolink)
    "discoLink Host": (True, 0, 2),
    "discoLink Host 12": (True, 0, 12),
    "discoLink Host FX": (False, 2, 2),
    "discoLink Device": (False, 2, 2),
}
KEYS = ["name", "vendor", "path", "uri", "format", "plugin_class", "is_instrument", "is_effect",
        "inputs", "outputs", "midi_inputs", "midi_outputs"]

pytestmark = pytest.mark.skipif(not DLSINE.exists(),
                                reason="run ./setup.sh: it builds the test plugins")

CONSTRUCTORS = {
    "Abort": "#include <stdlib.h>\n"
             "__attribute__((constructor)) static void f(void) { abort(); }\n",
    "Segv": "#include <signal.h>\n"
            "__attribute__((constructor)) static void f(void) { raise(SIGSEGV); }\n",
    "Hang": "#include <unistd.h>\n"
            "__attribute__((constructor)) static void f(void) { for (;;) pause(); }\n",
}


def make_bundle(folder: Path, name: str, library: bytes | None = None,
                source: str | None = None) -> Path:
    """A VST3 bundle laid out as DLSine.vst3 is: NAME.vst3/Contents/<arch>-linux/NAME.so
    (pedalboard dlopens exactly that file), holding ``library`` or ``source`` compiled."""
    bundle = folder / f"{name}.vst3"
    lib_dir = bundle / "Contents" / f"{platform.machine()}-linux"
    lib_dir.mkdir(parents=True)
    lib = lib_dir / f"{name}.so"
    if source is not None:
        src = folder / f"{name}.c"
        src.write_text(source)
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
        src.unlink()
    else:
        lib.write_bytes(library or b"")
    return bundle


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """A folder of bundles that crash, hang, or aren't plugins at all."""
    if sys.platform != "linux" or shutil.which("gcc") is None:
        pytest.skip("needs Linux and gcc to build the broken plugins")
    folder = tmp_path_factory.mktemp("broken")
    for name, source in CONSTRUCTORS.items():
        make_bundle(folder, name, source=source)
    make_bundle(folder, "Garbage", library=os.urandom(4096))
    (folder / "Flat.vst3").write_text("not a plugin, just a file with the name of one\n")
    return folder


@pytest.fixture
def env(tmp_path, namespace) -> dict[str, str]:
    """The CLI's environment: a cache and a home of the test's own, no $VST3_PATH, and an
    empty LV2 path (tests/test_lv2.py scans LV2 bundles). A namespace of its own too: the
    discoLink Device plugin in build/plugins registers itself when a probe activates it, and
    must not leave a registry in the machine's default namespace."""
    (tmp_path / "no-lv2").mkdir(exist_ok=True)
    e = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path / "home"),
             LV2_PATH=str(tmp_path / "no-lv2"))
    e.pop("VST3_PATH", None)
    return e


def cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", "plugin", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def scan_json(env: dict[str, str], *args: str) -> dict[str, dict]:
    """``plugin scan --json ARGS``, by path (name for the real plugins)."""
    r = cli(env, "scan", "--json", *args)
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)  # stdout is pure JSON although the plugins print junk
    assert isinstance(entries, list)
    names = [e["name"] for e in entries]
    assert names == sorted(names, key=str.casefold)
    return {e["path"]: e for e in entries}


def cache_file(env: dict[str, str]) -> Path:
    return Path(env["XDG_CACHE_HOME"]) / "discolink-bridge" / "plugin-scan.json"


def pedalboard_counts(tmp_path: Path, bundles: list[Path]) -> dict[str, int]:
    """Visible parameters per bundle, counted straight from pedalboard in a child (whose
    output we don't read): everything but DPF's hidden "MIDI Ch. N CC M" parameters."""
    out = tmp_path / "counts.json"
    code = (
        "import json, re, sys, pedalboard\n"
        "hidden = re.compile(r'^MIDI Ch\\. \\d+ CC \\d+$')\n"
        "counts = {}\n"
        "for path in sys.argv[2:]:\n"
        "    p = pedalboard.load_plugin(path)\n"
        "    counts[path] = sum(1 for q in p.parameters.values() if not hidden.match(q.name))\n"
        "open(sys.argv[1], 'w').write(json.dumps(counts))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(out), *map(str, bundles)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    return json.loads(out.read_text())


# ---- scan ---------------------------------------------------------------------------------


def test_scan_finds_the_real_plugins(env, tmp_path):
    found = scan_json(env, str(PLUGINS))
    ours = {e["name"]: e for p, e in found.items()
            if p.startswith(str(PLUGINS)) and e["format"] == "VST3"}  # LV2: test_lv2.py
    assert set(ours) == set(GOOD), ours.keys()  # each Dragonfly once, through its link
    counts = pedalboard_counts(tmp_path, [Path(e["path"]) for e in ours.values()])
    for name, (instrument, inputs, outputs) in GOOD.items():
        e = ours[name]
        assert e["error"] is None, e
        assert (e["is_instrument"], e["is_effect"]) == (instrument, not instrument)
        assert (e["inputs"], e["outputs"]) == (inputs, outputs), e
        assert e["format"] == "VST3" and e["vendor"]
        assert e["parameter_count"] == counts[e["path"]], e
        assert e["probed"] is True
        assert set(e) == {*KEYS, "parameter_count", "error", "probed"}
    assert ours["DLSine"]["parameter_count"] == 3
    assert ours["DLSine"]["path"] == str(DLSINE)
    # The links' own paths are shown, not where they point.
    assert ours["Dragonfly Room Reverb"]["path"] == str(PLUGINS / "DragonflyRoomReverb.vst3")


def test_scan_table(env):
    r = cli(env, "scan", str(PLUGINS))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = lines[0].split()
    assert header == ["NAME", "TYPE", "CLASS", "IN", "OUT", "MIDI", "PARAMS", "FORMAT",
                      "VENDOR", "PLUGIN"]
    rows = {ln.split("  ")[0]: ln for ln in lines[1:-1] if " VST3 " in ln}  # LV2: test_lv2
    assert set(GOOD) <= set(rows)
    # Aligned: every column starts at the header's offset.
    for column in ("TYPE", "CLASS", "IN", "PARAMS", "PLUGIN"):
        at = lines[0].index(column)
        for ln in lines[1:-1]:
            assert ln[at - 2:at] == "  " and ln[at] != " ", (column, ln)
    assert re.search(r"\binstrument\s+-\s+0\s+12\s+1/0\s+3\s+VST3\b", rows["DLSine12"])
    assert re.search(r"\beffect\s+-\s+2\s+2\b", rows["Dragonfly Hall Reverb"])
    assert lines[-1].startswith(f"{len(lines) - 2} plugin(s)")
    assert "assertion failure" not in r.stdout and "DPF" not in r.stdout


def live_probes(folder: Path) -> list[str]:
    """Processes still running with ``folder`` in their command line."""
    alive = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if pid.isdigit() and str(folder) in cmdline:
            alive.append(cmdline)
    return alive


def test_scan_survives_crashes_hangs_and_junk(env, broken):
    start = time.monotonic()
    found = scan_json(env, str(PLUGINS), str(broken), "--timeout", "3")
    errors = {Path(p).name: e["error"] for p, e in found.items() if p.startswith(str(broken))}
    assert set(errors) == {"Abort.vst3", "Segv.vst3", "Hang.vst3", "Garbage.vst3",
                           "Flat.vst3"}
    assert errors["Abort.vst3"] == "crashed with signal 6 (SIGABRT)"
    assert errors["Segv.vst3"] == "crashed with signal 11 (SIGSEGV)"
    assert errors["Hang.vst3"] == "timed out after 3 s"
    assert errors["Garbage.vst3"].startswith("not a loadable plugin")
    assert errors["Flat.vst3"].startswith("not a loadable plugin")
    for path, e in found.items():
        if path.startswith(str(broken)):
            assert e["name"] == Path(path).stem and e["parameter_count"] is None
            assert e["is_instrument"] is None and e["inputs"] is None
    good = {e["name"]: e for e in found.values() if e["error"] is None}
    assert set(GOOD) <= set(good)
    assert time.monotonic() - start < 60
    assert live_probes(broken) == []  # the hanging probe was killed, not left behind

    # The table says so too, in an ERROR column.
    r = cli(env, "scan", str(PLUGINS), str(broken), "--timeout", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split()[-1] == "ERROR"
    hang = next(ln for ln in r.stdout.splitlines() if ln.startswith("Hang "))
    assert "error" in hang and hang.endswith("timed out after 3 s")
    assert r.stdout.splitlines()[-1].endswith("5 failed to load")


# ---- cache --------------------------------------------------------------------------------


def test_cache_serves_and_refreshes(env, tmp_path, broken):
    folder = tmp_path / "plugins"
    shutil.copytree(DLSINE, folder / "DLSine.vst3")
    shutil.copytree((PLUGINS / "DragonflyRoomReverb.vst3").resolve(),
                    folder / "DragonflyRoomReverb.vst3")
    shutil.copytree(broken / "Segv.vst3", folder / "Segv.vst3")
    cache = cache_file(env)

    first = scan_json(env, str(folder))
    ours = {Path(p).name: e for p, e in first.items() if p.startswith(str(folder))}
    assert len(ours) == 3 and all(e["probed"] for e in ours.values())
    assert ours["Segv.vst3"]["error"] == "crashed with signal 11 (SIGSEGV)"
    text, mtime = cache.read_text(), cache.stat().st_mtime_ns
    cached = json.loads(text)["bundles"]
    assert {Path(k).name for k in cached} == set(ours)

    # Again: all from the cache (a crash too), and the cache file isn't even rewritten.
    second = scan_json(env, str(folder))
    assert not any(e["probed"] for e in second.values())
    strip = {p: {k: v for k, v in e.items() if k != "probed"} for p, e in first.items()}
    assert {p: {k: v for k, v in e.items() if k != "probed"}
            for p, e in second.items()} == strip
    assert (cache.read_text(), cache.stat().st_mtime_ns) == (text, mtime)

    # Touch one library: only its bundle is probed again.
    so = folder / "DLSine.vst3" / "Contents" / f"{platform.machine()}-linux" / "DLSine.so"
    later = time.time() + 10
    os.utime(so, (later, later))
    third = scan_json(env, str(folder))
    probed = {Path(p).name for p, e in third.items() if e["probed"]}
    assert probed == {"DLSine.vst3"}
    assert third[str(folder / "DLSine.vst3")]["parameter_count"] == 3

    # --no-cache probes everything again.
    fourth = scan_json(env, str(folder), "--no-cache")
    assert all(e["probed"] for e in fourth.values())


@pytest.mark.parametrize("junk", ["{not json", "[1, 2, 3]", '{"version": 1, "bundles": 7}',
                                  '{"version": 1, "bundles": {"/x": {"stamp": 1}}}', ""])
def test_corrupt_cache_is_ignored_and_rewritten(env, tmp_path, junk):
    folder = tmp_path / "plugins"
    shutil.copytree(DLSINE, folder / "DLSine.vst3")
    cache = cache_file(env)
    cache.parent.mkdir(parents=True)
    cache.write_text(junk)
    found = scan_json(env, str(folder))
    assert [e["probed"] for e in found.values()] == [True]
    assert found[str(folder / "DLSine.vst3")]["error"] is None
    assert str(folder / "DLSine.vst3") in json.loads(cache.read_text())["bundles"]
    again = scan_json(env, str(folder))
    assert [e["probed"] for e in again.values()] == [False]


def test_scan_in_process_counts_probes_and_reports_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VST3_PATH", raising=False)
    monkeypatch.setenv("LV2_PATH", str(tmp_path / "no-lv2"))
    folder = tmp_path / "plugins"
    shutil.copytree(DLSINE, folder / "DLSine.vst3")
    shutil.copytree(PLUGINS / "DLSine12.vst3", folder / "DLSine12.vst3")

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def start(self, total: int) -> None:
            self.calls.append(("start", total))

        def advance(self, label: str) -> None:
            self.calls.append(("advance",))

        def stop(self) -> None:
            self.calls.append(("stop",))

    for probes in (2, 0):
        before, rec = plugin_scan.probe_count, Recorder()
        results = plugin_scan.scan([folder], timeout=30, use_cache=True, progress=rec)
        assert plugin_scan.probe_count - before == probes
        assert [e["name"] for e in results] == ["DLSine", "DLSine12"]
        assert rec.calls == [("start", 2), ("advance",), ("advance",), ("stop",)]
    with pytest.raises(ValueError, match="no such folder"):
        plugin_scan.scan([tmp_path / "nope"], timeout=30, use_cache=True, progress=None)
    with pytest.raises(ValueError, match="timeout"):
        plugin_scan.scan([folder], timeout=0, use_cache=True, progress=None)


def test_progress_bar_only_on_a_terminal(env, tmp_path):
    folder = tmp_path / "plugins"
    shutil.copytree(DLSINE, folder / "DLSine.vst3")
    master, slave = pty.openpty()
    chunks, reader = drain_pty(master)
    try:
        r = subprocess.run([sys.executable, "-m", "bridge", "plugin", "scan", str(folder)],
                           cwd=REPO, env=dict(env, TERM="xterm", COLUMNS="120"),
                           stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120)
    finally:
        os.close(slave)
        reader.join(5)
        os.close(master)
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].startswith("NAME ")
    assert "scanning plugins" not in r.stdout
    assert "scanning plugins" in b"".join(chunks).decode("utf-8", "replace")


def test_find_bundles_follows_links_but_not_into_bundles(tmp_path):
    (tmp_path / "a" / "X.vst3" / "Contents" / "Inner.vst3").mkdir(parents=True)
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "a" / "sub" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "Link.vst3").symlink_to(tmp_path / "a" / "X.vst3")  # same bundle
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "Y.VST3").write_bytes(b"")
    (tmp_path / "b" / "Dangling.vst3").symlink_to(tmp_path / "nowhere")
    (tmp_path / "a" / "b").symlink_to(tmp_path / "b")
    found = plugin_scan.find_bundles([tmp_path / "a"])
    # X.vst3 once (by the first name in sorted order), not Inner.vst3 inside it; the
    # dangling link and the loop are skipped; the case of ".VST3" doesn't matter.
    assert found == [tmp_path / "a" / "Link.vst3", tmp_path / "a" / "b" / "Y.VST3"]


# ---- info ---------------------------------------------------------------------------------


def test_info_dlsine_json(env):
    r = cli(env, "info", str(DLSINE), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert set(KEYS) <= set(info) and "parameters" in info
    assert (info["name"], info["format"], info["path"]) == ("DLSine", "VST3", str(DLSINE))
    assert (info["is_instrument"], info["is_effect"]) == (True, False)
    assert (info["inputs"], info["outputs"]) == (0, 2)
    params = {p["key"]: p for p in info["parameters"]}
    assert set(params) == {"gain", "tune_st", "fault"}
    for p in params.values():
        assert set(p) == {"key", "name", "min", "max", "default", "unit", "toggled", "integer",
                          "logarithmic", "output", "choices"}
    assert (params["gain"]["min"], params["gain"]["max"]) == (0, 1)
    assert params["gain"]["default"] == pytest.approx(0.5)
    assert (params["tune_st"]["min"], params["tune_st"]["max"]) == (-12, 12)
    assert params["tune_st"]["default"] == pytest.approx(0, abs=1e-6)
    assert params["fault"]["min"] is not None and params["fault"]["default"] is not None

    text = cli(env, "info", str(DLSINE))
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("DLSine")
    assert re.search(r"^\s+KEY\s+NAME\s+MIN\s+MAX\s+DEFAULT\s+UNIT$", text.stdout, re.M)
    assert re.search(r"^\s+tune_st\s+\S+\s+-12\s+12\s+0\b", text.stdout, re.M)


def test_info_multichannel_and_effect(env):
    r = cli(env, "info", str(PLUGINS / "DLSine12.vst3"), "--json")
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["inputs"], json.loads(r.stdout)["outputs"]) == (0, 12)
    r = cli(env, "info", str(PLUGINS / "DragonflyPlateReverb.vst3"), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["is_effect"], info["inputs"], info["outputs"]) == (True, 2, 2)
    assert info["parameters"] and all("name" in p for p in info["parameters"])


def test_info_builtin(env):
    r = cli(env, "info", "builtin:Reverb", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["name"], info["format"], info["is_effect"]) == ("Reverb", "builtin", True)
    params = {p["key"]: p for p in info["parameters"]}
    assert "room_size" in params
    assert params["room_size"]["min"] is None and params["room_size"]["max"] is None
    assert params["room_size"]["default"] == pytest.approx(0.5)


def test_info_and_scan_errors(env, tmp_path, broken):
    r = cli(env, "info", "/no/such.vst3")  # usage errors: 2, as for scan
    assert r.returncode == 2 and "/no/such.vst3" in r.stderr and "Traceback" not in r.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    r = cli(env, "info", str(notes))
    assert r.returncode == 2 and "not a plugin" in r.stderr
    r = cli(env, "info", str(broken / "Garbage.vst3"))
    assert r.returncode == 1 and "Garbage.vst3" in r.stderr and "Traceback" not in r.stderr
    r = cli(env, "info", str(broken / "Segv.vst3"))
    assert r.returncode == 1 and "crashed with signal 11" in r.stderr
    r = cli(env, "info", str(broken / "Hang.vst3"), "--timeout", "2")
    assert r.returncode == 1 and "timed out after 2 s" in r.stderr
    r = cli(env, "info", "builtin:NoSuchThing")
    assert r.returncode == 2 and "NoSuchThing" in r.stderr
    r = cli(env, "scan", "/no/such/dir")
    assert r.returncode == 2 and "/no/such/dir" in r.stderr
    assert r.stdout == ""
