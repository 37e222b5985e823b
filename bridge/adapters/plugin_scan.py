"""Plugin discovery for ``discolink-bridge plugin scan`` and ``plugin info``: VST3 (and AU
on macOS) bundles, and LV2 bundles (``NAME.lv2`` folders on ``$LV2_PATH``).

Every plugin file is probed in a child process (``python -m bridge.adapters.plugin_scan
--probe ...``) with a timeout, so a plugin that crashes or hangs while it loads becomes an
entry with an ``error`` and the scan goes on. The child sends its findings as JSON lines
through a pipe of its own (``--fd``); its stdout goes to /dev/null and its stderr to a
temporary file, so whatever a plugin prints can't corrupt them.

One child probes a whole bundle: it lists the plugins in it, then describes them one by one.
If it dies on one plugin, that plugin gets the error and a new child carries on with the
rest. The timeout applies to each step (listing, and each plugin).

An LV2 bundle's child reads the bundle's Turtle through lilv first (with its own stderr
captured, where lilv reports syntax errors): a bundle with broken Turtle becomes one entry
with the error, and none of its plugins is loaded. Then each plugin is instantiated and run
for one block, so one that crashes in ``instantiate`` or ``run`` is caught here, not on
stage.

Scan results are cached in ``$XDG_CACHE_HOME/discolink-bridge/plugin-scan.json`` (default
``~/.cache``), per bundle (its real path), then per plugin name, with a stamp of the bundle's
files (newest mtime, total size, file count): a bundle whose stamp changed is probed again.
Time-outs are not cached (the plugin may just have been slow); crashes and load errors are,
until the bundle changes or ``--no-cache``. A corrupt cache file is ignored and rewritten.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from .persist import atomic_write_text
from .plugin import PLUGIN_SUFFIXES, plugin_names_in_file
from .stage import (
    BUILTIN_PREFIX,
    LV2_PREFIX,
    PluginError,
    Stage,
    UnknownPluginError,
    load_stage,
)

CACHE_VERSION = 2
DEFAULT_TIMEOUT = 30.0
# The keys of one scan entry, in output order; ``probed`` isn't cached.
ENTRY_KEYS = ("name", "vendor", "path", "uri", "format", "plugin_class", "is_instrument",
              "is_effect", "inputs", "outputs", "midi_inputs", "midi_outputs",
              "parameter_count", "error")
SCAN_KEYS = (*ENTRY_KEYS, "probed")
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
LV2_SUFFIX = ".lv2"
# Probed at once: enough to keep a couple of cores busy, few enough to stay gentle.
_WORKERS = max(1, min(4, os.cpu_count() or 1))


# ---- where plugins live -------------------------------------------------------------------


def _is_macos() -> bool:
    return sys.platform == "darwin"


def bundle_suffixes() -> tuple[str, ...]:
    """File name endings of the plugin bundles this platform can load."""
    return (*PLUGIN_SUFFIXES, LV2_SUFFIX) if _is_macos() else (".vst3", LV2_SUFFIX)


def standard_dirs() -> list[Path]:
    """The platform's standard plugin folders (existing or not), then ``$VST3_PATH``'s,
    then the LV2 path's (``$LV2_PATH``, else lilv's default folders)."""
    home = Path.home()
    if _is_macos():
        dirs = [home / "Library/Audio/Plug-Ins/VST3", Path("/Library/Audio/Plug-Ins/VST3"),
                home / "Library/Audio/Plug-Ins/Components",
                Path("/Library/Audio/Plug-Ins/Components")]
    elif sys.platform == "win32":
        common = os.environ.get("COMMONPROGRAMFILES", r"C:\Program Files\Common Files")
        dirs = [Path(common) / "VST3"]
    else:
        dirs = [home / ".vst3", Path("/usr/lib/vst3"), Path("/usr/local/lib/vst3")]
    extra = os.environ.get("VST3_PATH", "")
    dirs += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    from .lv2 import search_path

    return dirs + [Path(p).expanduser() for p in search_path()]


def find_bundles(dirs: Iterable[Path]) -> list[Path]:
    """Every plugin bundle under ``dirs``, breadth first, each real bundle once.

    A bundle (``.vst3``, or ``.component`` on macOS) may be a directory or a file; the
    search doesn't go into bundles, follows symbolic links (to bundles and to folders, each
    real folder visited once) and skips what it can't read. Paths are absolute but keep the
    links' names, so a linked bundle shows where it was found.
    """
    suffixes = bundle_suffixes()
    seen_dirs: set[str] = set()
    seen_bundles: set[str] = set()
    found: list[Path] = []
    queue = deque(os.path.abspath(os.path.expanduser(d)) for d in dirs)
    while queue:
        folder = queue.popleft()
        real = os.path.realpath(folder)
        if real in seen_dirs:
            continue
        seen_dirs.add(real)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.name.lower().endswith(suffixes):
                    if not os.path.exists(entry.path):  # a dangling link
                        continue
                    target = os.path.realpath(entry.path)
                    if target not in seen_bundles:
                        seen_bundles.add(target)
                        found.append(Path(entry.path))
                elif entry.is_dir(follow_symlinks=True):
                    queue.append(entry.path)
            except OSError:
                continue
    return found


def bundle_stamp(path: Path) -> list[int]:
    """``[newest mtime (ns), total size, file count]`` of a bundle, following links: it
    changes when any file of the bundle does (or is added or removed)."""
    st = os.stat(path)
    if not os.path.isdir(path):
        return [st.st_mtime_ns, st.st_size, 1]
    newest, size, count = st.st_mtime_ns, 0, 0
    for root, subdirs, files in os.walk(path, followlinks=True):
        for name in subdirs + files:
            try:
                s = os.stat(os.path.join(root, name))
            except OSError:
                continue
            newest = max(newest, s.st_mtime_ns)
            if name in files:
                size += s.st_size
                count += 1
    return [newest, size, count]


# ---- describing a loaded plugin (in the child) --------------------------------------------


def describe(stage: Stage, path: str) -> dict[str, Any]:
    """The ``plugin info`` dict of a loaded stage."""
    info = getattr(stage, "info", None)  # an LV2 stage's description from its Turtle
    return {
        "name": stage.name,
        "vendor": stage.vendor or None,
        "path": path,
        "uri": getattr(stage, "uri", None),
        "format": stage.format,
        "plugin_class": info.plugin_class if info is not None else None,
        "is_instrument": stage.kind == "instrument",
        "is_effect": stage.kind == "effect",
        "inputs": stage.inputs,
        "outputs": stage.outputs,
        "midi_inputs": info.midi_inputs if info is not None else int(stage.midi_in),
        "midi_outputs": info.midi_outputs if info is not None else int(stage.midi_out),
        "latency": stage.current_latency(),
        "presets": [label for _, label in stage.presets()] if hasattr(stage, "presets")
        else [],
        "parameters": [{"key": p.key, "name": p.name, **p.describe()}
                       for p in stage.parameters],
    }


def _exception_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _probe_main(argv: Sequence[str]) -> int:
    """The child: describe plugins of one bundle as JSON lines on ``--fd``.

    With ``--list`` it first sends ``{"names": [...]}`` (or ``{"error": ...}``), then
    describes every plugin of the bundle; otherwise each ``--plugin-name`` (or the bundle's
    only plugin). One line per plugin: ``{"plugin_name": N, "result": {...}}`` or
    ``{"plugin_name": N, "error": "..."}``.
    """
    ap = argparse.ArgumentParser(prog="plugin_scan --probe")
    ap.add_argument("--probe", required=True, metavar="PATH")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--plugin-name", action="append", default=[])
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = ap.parse_args(argv)
    os.set_inheritable(args.fd, False)  # nothing a plugin starts gets our pipe
    out = os.fdopen(args.fd, "w", encoding="utf-8")
    # Should our parent be gone, don't hang forever: SIGALRM's default action ends us.
    alarm = math.ceil(args.timeout) + 5 if hasattr(signal, "alarm") else 0

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()
        if alarm:
            signal.alarm(alarm)

    if alarm:
        signal.alarm(alarm)
    names: list[str | None] = list(args.plugin_name)
    if args.list and not args.probe.rstrip("/").endswith(LV2_SUFFIX):
        try:
            names = list(plugin_names_in_file(args.probe))
        except Exception as exc:
            text = _exception_text(exc).replace(f"Unable to scan plugin {args.probe}: ", "")
            send({"error": f"not a loadable plugin: {text}"})
            names = []
        else:
            send({"names": names})
    elif not names:
        names = [None]
    if args.probe.rstrip("/").endswith(LV2_SUFFIX):
        _probe_lv2(args.probe, names, args.list, send)
        out.close()
        os._exit(0)
    for name in names:
        try:
            stage = load_stage(args.probe, plugin_name=name)
            send({"plugin_name": name, "result": describe(stage, args.probe)})
        except PluginError as exc:
            send({"plugin_name": name, "error": str(exc),
                  "usage": isinstance(exc, UnknownPluginError)})
        except Exception as exc:
            send({"plugin_name": name,
                  "error": f"{args.probe}: {type(exc).__name__}: {_exception_text(exc)}"})
    out.close()
    os._exit(0)  # skip plugin destructors and atexit: all is said, and they may misbehave


@contextlib.contextmanager
def captured_stderr(echo: bool = False) -> Iterator[list[str]]:
    """What this process writes to fd 2 meanwhile (C and C++ code write to the fd, not to
    sys.stderr: lilv's parse errors, DPF's assertions), as a list filled when the block
    ends; ``echo`` writes it to fd 2 afterwards as well."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            if echo:
                os.write(2, text.encode())
            lines += text.splitlines()


def _probe_lv2(bundle: str, uris: Sequence[str | None], list_names: bool,
               send: Any) -> None:
    """The child's work for an LV2 bundle: its Turtle checked, then each plugin (``uris``,
    or with ``list_names`` every plugin of the bundle) instantiated, run and described."""
    from . import lv2

    real = os.path.realpath(bundle)
    with captured_stderr(echo=True) as errors:  # still shown, in the probe's stderr file
        w = lv2.world()
        mine = [p for p in w.all_plugins() if os.path.realpath(w.bundle_path(p)) == real]
        if not mine:  # not on the LV2 path: load it on its own
            node = w.lib.lilv_new_file_uri(w.ptr, None, (real + "/").encode())
            w.lib.lilv_world_load_bundle(w.ptr, node)
            w.lib.lilv_node_free(node)
            mine = [p for p in w.all_plugins()
                    if os.path.realpath(w.bundle_path(p)) == real]
        infos = {w.plugin_uri(p): lv2.describe_plugin(w, p) for p in mine}  # reads the data
    broken = [ln.strip() for ln in errors
              if real in ln and ln.lstrip().startswith("error:")]
    if not os.path.isfile(os.path.join(real, "manifest.ttl")):
        send({"error": "not an LV2 bundle: it has no manifest.ttl"})
        return
    if broken:
        detail = broken[0].removeprefix("error:").strip().replace(real + "/", "")
        send({"error": f"broken Turtle, bundle skipped: {detail}"})
        return
    if list_names:
        uris = sorted(infos)
        send({"names": uris, "labels": {u: i.name for u, i in infos.items()}})
    for uri in uris:
        spec = f"lv2:{uri}"
        try:  # each step announced first: if the plugin kills us, the parent knows where
            send({"plugin_name": uri, "step": "instantiate()"})
            refusal = None
            with captured_stderr(echo=True) as said:  # lilv's reason when instantiate fails
                try:
                    stage = lv2.load_lv2_stage(spec, warm_up=False)
                except PluginError as exc:
                    refusal = exc
            if refusal is not None:
                why = next((ln.split("error: ", 1)[-1] for ln in reversed(said)
                            if "error: " in ln), "")
                if "failed to instantiate" not in str(refusal) or not why:
                    raise refusal
                raise PluginError(f"{spec}: failed to instantiate: {why}")
            send({"plugin_name": uri, "step": "run()"})
            stage.warm_up()
            send({"plugin_name": uri, "result": describe(stage, bundle)})
            stage.close()
        except PluginError as exc:
            send({"plugin_name": uri, "error": str(exc).removeprefix(f"{spec}: ")})
        except Exception as exc:
            send({"plugin_name": uri, "error": f"{type(exc).__name__}: {_exception_text(exc)}"})


# ---- running a probe (in the parent) ------------------------------------------------------


class _Children:
    """The probe processes alive now, so an interrupted scan can kill them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill(proc)


_children = _Children()
probe_count = 0  # child processes started by this process: tests and curious callers
_count_lock = threading.Lock()


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session
    with contextlib.suppress(OSError):
        proc.kill()


def _signal_name(number: int) -> str:
    try:
        return f" ({signal.Signals(number).name})"
    except ValueError:
        return ""


def _last_line(stream: Any) -> str:
    """The last line worth showing of what the child wrote to stderr."""
    try:
        stream.seek(0)
        text = stream.read()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    return env


def run_probe(path: str, names: Sequence[str] | None, *, timeout: float,
              list_names: bool = False) -> tuple[list[dict], str | None]:
    """Run one probe child: (its messages, how it failed or None).

    The failure is "timed out after T s" when no message came for ``timeout`` seconds,
    "crashed with signal N (SIGX)", or "probe exited with status N: <stderr's last line>".
    """
    global probe_count
    cmd = [sys.executable, "-m", "bridge.adapters.plugin_scan", "--probe", path,
           "--timeout", repr(timeout)]
    if list_names:
        cmd.append("--list")
    for name in names or ():
        cmd += ["--plugin-name", name]
    read_fd, write_fd = os.pipe()
    messages: list[dict] = []
    failure: str | None = None
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen([*cmd, "--fd", str(write_fd)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    pass_fds=(write_fd,), start_new_session=True,
                                    env=_child_env())
        finally:
            os.close(write_fd)
        with _count_lock:
            probe_count += 1
        _children.add(proc)
        try:
            buffer = b""
            deadline = time.monotonic() + timeout
            timed_out = False
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([read_fd], [], [], left)
                if not ready:
                    continue
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    with contextlib.suppress(ValueError):
                        message = json.loads(line)
                        if isinstance(message, dict):
                            messages.append(message)
                            deadline = time.monotonic() + timeout
            if timed_out and proc.poll() is None:
                _kill(proc)
                proc.wait()
                failure = f"timed out after {timeout:g} s"
            else:
                try:
                    code = proc.wait(timeout=max(timeout, 1.0))
                except subprocess.TimeoutExpired:  # closed our pipe, then hung on exit
                    _kill(proc)
                    code = proc.wait()
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)  # whatever the plugin started
                if code < 0:
                    failure = f"crashed with signal {-code}{_signal_name(-code)}"
                elif code > 0:
                    tail = _last_line(err)
                    failure = f"probe exited with status {code}" + (f": {tail}" if tail
                                                                      else "")
        finally:
            os.close(read_fd)
            if proc.poll() is None:
                _kill(proc)
                proc.wait()
            _children.discard(proc)
    return messages, failure


def _format_of(path: str) -> str:
    lower = path.lower().rstrip("/")
    return "AU" if lower.endswith(".component") else "LV2" if lower.endswith(LV2_SUFFIX) \
        else "VST3"


def _scan_entry(info_dict: dict, path: str) -> dict[str, Any]:
    entry = {k: info_dict.get(k) for k in ENTRY_KEYS}
    entry.update(path=path, parameter_count=len(info_dict.get("parameters") or []),
                 error=None)
    return entry


def _error_entry(name: str, path: str, error: str, uri: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = dict.fromkeys(ENTRY_KEYS)
    entry.update(name=name, path=path, uri=uri, format=_format_of(path), error=error)
    return entry


def _strip_path(message: str, path: str) -> str:
    """load_stage's messages start with the spec; a scan entry shows the path already."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def probe_bundle(path: str, *, timeout: float) -> list[dict[str, Any]]:
    """Scan entries (without ``probed``) for every plugin of one bundle, each probed in a
    child; a crash or a hang costs only the plugin it happened on."""
    stem = Path(path).name.rsplit(".", 1)[0]
    names: list[str] | None = None
    labels: dict[str, str] = {}  # an LV2 plugin's name, by URI (its "plugin name" here)
    steps: dict[str, str] = {}  # where an LV2 probe was with each plugin
    lv2 = _format_of(path) == "LV2"
    done: dict[str, dict[str, Any]] = {}

    def failed(name: str, error: str) -> dict[str, Any]:
        return _error_entry(labels.get(name, name), path, error, name if lv2 else None)

    while True:
        if names is None:
            messages, failure = run_probe(path, None, timeout=timeout, list_names=True)
        else:
            todo = [n for n in names if n not in done]
            if not todo:
                break
            messages, failure = run_probe(path, todo, timeout=timeout)
        for m in messages:
            if "names" in m and isinstance(m["names"], list):
                names = [str(n) for n in m["names"]]
                if isinstance(m.get("labels"), dict):
                    labels = {str(k): str(v) for k, v in m["labels"].items()}
            elif "plugin_name" in m and isinstance(m["plugin_name"], str):
                name = m["plugin_name"]
                if isinstance(m.get("step"), str):
                    steps[name] = m["step"]
                elif isinstance(m.get("result"), dict):
                    done[name] = _scan_entry(m["result"], path)
                else:
                    done[name] = failed(name, _strip_path(str(m.get("error")), path))
            elif "error" in m:
                return [_error_entry(stem, path, str(m["error"]))]
        if names is None:
            return [_error_entry(stem, path, failure or "the probe gave no result")]
        todo = [n for n in names if n not in done]
        if not todo:
            break
        if failure is None:  # a clean exit that skipped some: don't loop for ever
            for name in todo:
                done[name] = failed(name, "the probe gave no result")
            break
        # The child died on the first plugin it hadn't finished.
        where = f" in {steps[todo[0]]}" if todo[0] in steps else ""
        done[todo[0]] = failed(todo[0], f"{failure}{where} while loading {todo[0]!r}"
                               if len(names) > 1 else failure + where)
    if not names:
        if lv2:  # a specification or a bundle of presets: nothing to list (as lv2ls does)
            return []
        return [_error_entry(stem, path, "the bundle holds no plugin")]
    return [done[n] for n in names]


# ---- the cache ----------------------------------------------------------------------------


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/discolink-bridge/plugin-scan.json`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "discolink-bridge" / "plugin-scan.json"


def _pedalboard_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pedalboard")
    except PackageNotFoundError:
        return ""


def load_cache(path: Path | None = None) -> dict[str, dict]:
    """The cached bundles, ``{real path: {"stamp": [...], "plugins": [entry, ...]}}``;
    empty if the file is missing, unreadable, corrupt or from another pedalboard."""
    path = path or cache_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION \
            or data.get("pedalboard") != _pedalboard_version() \
            or not isinstance(data.get("bundles"), dict):
        return {}
    bundles = {}
    for key, value in data["bundles"].items():
        if isinstance(value, dict) and isinstance(value.get("stamp"), list) \
                and isinstance(value.get("plugins"), list) \
                and (value["plugins"] or key.endswith(LV2_SUFFIX)) \
                and all(isinstance(e, dict) for e in value["plugins"]):
            bundles[key] = value
    return bundles


def save_cache(bundles: dict[str, dict], path: Path | None = None) -> None:
    """Write the cache atomically; a failure is reported on stderr, never raised."""
    path = path or cache_path()
    data = {"version": CACHE_VERSION, "pedalboard": _pedalboard_version(), "bundles": bundles}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1))
    except OSError as exc:
        print(f"discolink-bridge: could not write the plugin cache {path}: {exc}",
              file=sys.stderr)


# ---- progress -----------------------------------------------------------------------------


class ScanProgress(Protocol):
    """What :func:`scan` reports progress to."""

    def start(self, total: int) -> None: ...

    def advance(self, label: str) -> None: ...

    def stop(self) -> None: ...


class ConsoleProgress:
    """A rich progress bar on stderr, gone when the scan ends."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(SpinnerColumn(), TextColumn("scanning plugins"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("{task.description}"),
                                  console=Console(stderr=True), transient=True)
        self._task: Any = None

    def start(self, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("", total=total)

    def advance(self, label: str) -> None:
        self._progress.update(self._task, advance=1, description=label)

    def stop(self) -> None:
        self._progress.stop()


def console_progress() -> ConsoleProgress:
    """The progress bar ``plugin scan`` shows on a terminal."""
    return ConsoleProgress()


# ---- scan and info ------------------------------------------------------------------------


def _check_timeout(timeout: float) -> None:
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")


def scan(dirs: Sequence[Path], *, timeout: float = DEFAULT_TIMEOUT, use_cache: bool = True,
         progress: ScanProgress | None = None) -> list[dict[str, Any]]:
    """Scan entries of every plugin in the standard folders and ``dirs``, sorted by name.

    Each entry has :data:`SCAN_KEYS`: the ``info`` keys but ``parameters``, plus
    ``parameter_count``, ``error`` (None when the plugin loaded) and ``probed`` (False when
    it came from the cache). ValueError for a folder that doesn't exist or a bad timeout.
    """
    _check_timeout(timeout)
    for d in dirs:
        if not Path(d).expanduser().is_dir():
            raise ValueError(f"no such folder: {d}")
    bundles = find_bundles([*standard_dirs(), *dirs])
    stored = load_cache()
    cache = stored if use_cache else {}
    keep = {k: v for k, v in stored.items() if os.path.exists(k)}  # other folders' bundles
    results: list[dict[str, Any]] = []
    todo: list[tuple[str, str, list[int] | None]] = []
    for bundle in bundles:
        path = str(bundle)
        real = os.path.realpath(path)
        try:
            stamp: list[int] | None = bundle_stamp(bundle)
        except OSError:
            stamp = None
        hit = cache.get(real)
        if hit is not None and stamp is not None and hit["stamp"] == stamp:
            results += [{**{k: e.get(k) for k in ENTRY_KEYS}, "path": path, "probed": False}
                        for e in hit["plugins"]]
        else:
            todo.append((path, real, stamp))
    if progress is not None:
        progress.start(len(bundles))
        for _ in range(len(bundles) - len(todo)):
            progress.advance("(cached)")
    try:
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            futures = {pool.submit(probe_bundle, path, timeout=timeout): (path, real, stamp)
                       for path, real, stamp in todo}
            try:
                for future in as_completed(futures):
                    path, real, stamp = futures[future]
                    entries = future.result()
                    results += [{**e, "probed": True} for e in entries]
                    if stamp is not None and not any(
                            (e["error"] or "").startswith("timed out") for e in entries):
                        keep[real] = {"stamp": stamp, "plugins": entries}
                    else:
                        keep.pop(real, None)
                    if progress is not None:
                        progress.advance(Path(path).name)
            except BaseException:
                for f in futures:
                    f.cancel()
                _children.kill_all()
                raise
    finally:
        if progress is not None:
            progress.stop()
    if todo or len(keep) != len(stored):
        save_cache(keep)
    results.sort(key=lambda e: (str(e["name"]).casefold(), e["path"]))
    return results


def info(path_or_builtin: str, *, plugin_name: str | None = None,
         timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """One plugin's details: name, vendor, path, format, is_instrument, is_effect, inputs,
    outputs and parameters (key, name, min, max, default, unit).

    A file or an LV2 plugin (``lv2:URI`` or ``lv2:NAME``) is loaded in a child process;
    PluginError if it fails to load, crashes or takes longer than ``timeout``
    (UnknownPluginError for an LV2 name that matches nothing). ``builtin:NAME`` is loaded
    here (it's part of pedalboard).
    """
    _check_timeout(timeout)
    if not path_or_builtin:
        raise ValueError("no plugin given")
    if path_or_builtin.startswith(BUILTIN_PREFIX):
        stage = load_stage(path_or_builtin, plugin_name=plugin_name)
        return describe(stage, stage.spec)
    if path_or_builtin.startswith(LV2_PREFIX):
        from . import lv2

        w = lv2.world()
        plugin = w.find(path_or_builtin)  # UnknownPluginError names the nearest
        uri, bundle = w.plugin_uri(plugin), w.bundle_path(plugin)
        messages, failure = run_probe(bundle, [uri], timeout=timeout)
        step = ""
        for m in messages:
            if isinstance(m.get("result"), dict):
                return m["result"]
            if "error" in m:
                raise PluginError(f"lv2:{uri}: {m['error']}")
            step = f" in {m['step']}" if isinstance(m.get("step"), str) else step
        raise PluginError(f"lv2:{uri}: {failure or 'the probe gave no result'}{step}")
    path = Path(path_or_builtin).expanduser()
    if not path.exists():  # usage errors (exit 2), as for `plugin scan` and a bad folder
        raise UnknownPluginError(f"{path_or_builtin}: no such file or directory")
    if path.suffix.lower() not in PLUGIN_SUFFIXES:
        raise UnknownPluginError(f"{path_or_builtin}: not a plugin (expected a .vst3 bundle"
                          f"{' or .component' if _is_macos() else ''}, or builtin:NAME)")
    messages, failure = run_probe(str(path), [plugin_name] if plugin_name else None,
                                  timeout=timeout)
    for m in messages:
        if isinstance(m.get("result"), dict):
            return {**m["result"], "path": os.path.abspath(path)}
        if "error" in m:  # a --plugin-name the file doesn't hold is a usage error (exit 2)
            raise (UnknownPluginError if m.get("usage") else PluginError)(str(m["error"]))
    raise PluginError(f"{path_or_builtin}: {failure or 'the probe gave no result'}")


# ---- text output --------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     .rstrip() for r in [header, *rows])


def _channels(value: int | None) -> str:
    return "any" if value is None else str(value)


def _kind(entry: dict) -> str:
    if entry.get("error"):
        return "error"
    if entry.get("is_instrument"):
        return "instrument"
    return "effect" if entry.get("is_effect") else "midi effect"


def _spec(entry: dict) -> str:
    """What ``device --plugin`` takes for this entry: lv2:URI, or the bundle's path."""
    return f"lv2:{entry['uri']}" if entry.get("uri") else str(entry.get("path"))


def _plugin_class(entry: dict) -> str:
    """An LV2 plugin's class without the word "Plugin" ("Reverb", "Amplifier"); "-" where
    the format has none (VST3)."""
    name = entry.get("plugin_class") or ""
    return name.removesuffix(" Plugin") or "-"


def _midi(entry: dict) -> str:
    ins, outs = entry.get("midi_inputs"), entry.get("midi_outputs")
    return "-" if ins is None and outs is None else f"{ins or 0}/{outs or 0}"


def format_table(results: Sequence[dict]) -> str:
    """Scan entries as aligned columns with a header, then a count."""
    if not results:
        return "no plugins found"
    errors = any(e.get("error") for e in results)
    header = ["NAME", "TYPE", "CLASS", "IN", "OUT", "MIDI", "PARAMS", "FORMAT", "VENDOR",
              "PLUGIN"]
    if errors:
        header.append("ERROR")
    rows = []
    for e in results:
        failed = bool(e.get("error"))
        row = [str(e.get("name")), _kind(e), _plugin_class(e),
               "-" if failed else _channels(e.get("inputs")),
               "-" if failed else _channels(e.get("outputs")),
               "-" if failed else _midi(e),
               _cell(e.get("parameter_count")), _cell(e.get("format")),
               _cell(e.get("vendor")), _spec(e)]
        if errors:
            row.append(e.get("error") or "")
        rows.append(row)
    bad = sum(1 for e in results if e.get("error"))
    summary = f"{len(results)} plugin(s)" + (f", {bad} failed to load" if bad else "")
    return _table(header, rows) + "\n" + summary


def format_info(result: dict) -> str:
    """``plugin info`` for people: a summary, then the parameters as a table."""
    lines = [f"{result['name']}" + (f" by {result['vendor']}" if result.get("vendor") else ""),
             f"  path:     {result['path']}"]
    if result.get("uri"):
        lines.append(f"  uri:      {result['uri']}   (device --plugin lv2:{result['uri']})")
    lines += [f"  format:   {result['format']}"
              + (f" ({result['plugin_class']})" if result.get("plugin_class") else ""),
              f"  type:     {_kind(result)}",
              f"  inputs:   {_channels(result.get('inputs'))}",
              f"  outputs:  {_channels(result.get('outputs'))}"]
    if result.get("midi_inputs") or result.get("midi_outputs"):
        lines.append(f"  midi:     {result.get('midi_inputs') or 0} in, "
                     f"{result.get('midi_outputs') or 0} out")
    if result.get("latency"):
        lines.append(f"  latency:  {result['latency']} frames")
    if result.get("presets"):
        lines.append(f"  presets:  {', '.join(result['presets'])}")
    params = result.get("parameters") or []
    lines.append(f"  parameters: {len(params)}")
    if params:
        header = ["KEY", "NAME", "MIN", "MAX", "DEFAULT", "UNIT"]
        rows = [[p["key"], p["name"], _cell(p.get("min")), _cell(p.get("max")),
                 _cell(p.get("default")), p.get("unit") or ""] for p in params]
        notes = [_notes(p) for p in params]
        if any(notes):  # toggles, integers, enumerations, outputs: only where there are some
            header.append("NOTES")
            rows = [[*r, n] for r, n in zip(rows, notes, strict=True)]
        lines.append(_table(header, rows, "    "))
    return "\n".join(lines)


def _notes(p: dict) -> str:
    notes = [flag for flag in ("output", "toggled", "integer", "logarithmic") if p.get(flag)]
    if p.get("choices"):
        notes.append("one of " + ", ".join(f"{c['value']:g}={c['label']}"
                                           for c in p["choices"]))
    return "; ".join(notes)


if __name__ == "__main__":
    raise SystemExit(_probe_main(sys.argv[1:]))
