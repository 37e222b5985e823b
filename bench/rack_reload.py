"""Supervision during a big reload: how long a crashed device takes to come back, and how long
``status`` takes to answer, while the rack parses a large rack file.

Run from the repository root:

    .venv/bin/python bench/rack_reload.py                 # 3 reps, 8,000 midi_in patterns
    .venv/bin/python bench/rack_reload.py --patterns 4000 --reps 4 --json

A real rack (``python -m bridge --namespace NS rack FILE --state-dir TMP``) runs eight
built-in synth devices (``restart: always``). Each measurement SIGKILLs one device (each
device at most once, so the crash limit never comes into it) and times, from the kill, until
the registry lists its id again under a new pid; the first restart waits the 0.5 s backoff
(BACKOFF_FIRST_S), so that is the floor. Right after the kill, it also times one ``status``
request on the control socket. Two conditions, alternated:

- idle: nothing else happens (the same-run baseline);
- reload: the file was just rewritten with one more device carrying ``--patterns`` midi_in
  patterns (8,000 are 240 KB of YAML, near the rack file's 256 KiB cap, and take about
  a second to parse) and ``rack reload`` was sent
  0.3 s before the kill, so the kill lands while the reload parses. The file is then put
  back and reloaded again before the next measurement.

The result is each condition's median, and reload / idle as a ratio. A supervisor that
parses on its loop (before this benchmark existed) delays the restart, and ``status``, by
the whole parse.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO, log

from bridge.rack.config import RACK_FILE_MAX_BYTES
from bridge.rack.supervisor import ask
from bridge.transport import Registry

DEVICES = 8
BASE = "name: bench\ndevices:\n" + "".join(
    f"  - id: D{i}\n    kind: synth\n    restart: always\n" for i in range(DEVICES))


def big_file(patterns: int) -> str:
    return BASE + "  - id: Big\n    kind: synth\n    midi_in:\n" + "".join(
        f"      - 'no such port {i:06d}'\n" for i in range(patterns))


def device_pids(namespace: str) -> dict[str, int]:
    registry = Registry.find(namespace)
    if registry is None:
        return {}
    try:
        return {d.id: d.pid for d in registry.scan()}
    finally:
        registry.close()


def restart_delay(namespace: str, device_id: str, timeout: float = 300.0) -> tuple[float, float]:
    """SIGKILL ``device_id``; (seconds until it is registered again, status latency)."""
    pid = device_pids(namespace)[device_id]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        ask(namespace, "status", timeout=timeout)
        status_s = time.monotonic() - killed
    except (OSError, RuntimeError):
        status_s = float("nan")
    while time.monotonic() - killed < timeout:
        now = device_pids(namespace).get(device_id)
        if now is not None and now != pid:
            return time.monotonic() - killed, status_s
        time.sleep(0.01)
    raise RuntimeError(f"{device_id} did not come back within {timeout:.0f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patterns", type=int, default=8_000,
                   help="midi_in patterns of the big reload's extra device (default 8000; the "
                        "file must stay within the rack file cap, RACK_FILE_MAX_BYTES)")
    p.add_argument("--reps", type=int, default=3, help="measurements per condition (max 4)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args()
    size = len(big_file(args.patterns).encode())
    if args.patterns < 1 or size > RACK_FILE_MAX_BYTES:
        p.error(f"--patterns {args.patterns}: the rack file would be {size:,} bytes; a rack "
                f"file may be at most {RACK_FILE_MAX_BYTES:,} (about 8,500 patterns)")
    reps = min(args.reps, DEVICES // 2)
    namespace = f"bench-reload-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="dlbench-") as tmp:
        path = Path(tmp) / "rack.yaml"
        path.write_text(BASE)
        env = dict(os.environ, DISCOLINK_NAMESPACE=namespace)
        rack = subprocess.Popen([sys.executable, "-m", "bridge", "rack", str(path),
                                 "--state-dir", str(Path(tmp) / "state")], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in rack.stdout:
                if " ready: " in line and line.startswith("rack "):
                    break
            threading.Thread(target=rack.stdout.read, daemon=True).start()
            t = time.monotonic()
            parse_s = None
            results: dict[str, list[tuple[float, float]]] = {"idle": [], "reload": []}
            victims = iter(f"D{i}:0" for i in range(DEVICES))
            for _ in range(reps):
                results["idle"].append(restart_delay(namespace, next(victims)))
                path.write_text(big_file(args.patterns))
                done = threading.Event()
                started = time.monotonic()

                def reload(done: threading.Event = done) -> None:
                    ask(namespace, "reload", timeout=600)
                    done.set()

                threading.Thread(target=reload, daemon=True).start()
                time.sleep(0.3)  # the reload is parsing now
                results["reload"].append(restart_delay(namespace, next(victims)))
                done.wait(600)
                parse_s = time.monotonic() - started
                path.write_text(BASE)
                ask(namespace, "reload", timeout=600)
            log(f"measured in {time.monotonic() - t:.0f} s")
        finally:
            rack.send_signal(signal.SIGTERM)
            rack.wait(timeout=60)
    out = {"patterns": args.patterns, "reps": reps, "big_reload_s": round(parse_s or 0, 2)}
    for cond, rows in results.items():
        out[f"{cond}_restart_s"] = round(statistics.median(r[0] for r in rows), 3)
        out[f"{cond}_status_s"] = round(statistics.median(r[1] for r in rows), 3)
    out["restart_ratio"] = round(out["reload_restart_s"] / out["idle_restart_s"], 2)
    out["status_ratio"] = round(out["reload_status_s"] / out["idle_status_s"], 2)
    table = (f"big reload ({args.patterns} midi_in patterns): {out['big_reload_s']:.1f} s\n"
             f"{'':<8}{'restart s':>10}{'status s':>10}\n"
             f"{'idle':<8}{out['idle_restart_s']:>10.3f}{out['idle_status_s']:>10.3f}\n"
             f"{'reload':<8}{out['reload_restart_s']:>10.3f}{out['reload_status_s']:>10.3f}\n"
             f"reload/idle: restart x{out['restart_ratio']}, status x{out['status_ratio']}")
    if args.json:
        log(table)
        print(json.dumps(out))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
