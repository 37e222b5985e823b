"""A rack's state folder: its lock, and the device ids it keeps in ``rack.json``.

One rack owns a state folder for its whole life (:func:`lock_state_folder`): two racks from
one file in different namespaces would otherwise share it, and the last to stop would
overwrite the other's plugin states. ``rack.json`` maps each device of the file to the
``Name:N`` it got, so it comes back with that id; it is read as untrusted input
(:func:`read_saved_ids`): a bad file, or a bad entry, is reported and left out, then the
rack rewrites the file from what it runs, never obeying what it can't check.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..adapters.persist import FileLock, InUseError, atomic_write_text
from ..transport.registry import validate_device_id
from .config import RACK_LOCK_FILE, RackConfig

__all__ = ["lock_state_folder", "read_saved_ids", "write_saved_ids"]


def lock_state_folder(folder: Path) -> FileLock:
    """Lock ``folder`` (``rack.lock`` in it) for this process's life. InUseError (exit 1)
    names the process that holds it; OSError when the lock file can't be created."""
    try:
        return FileLock(folder / RACK_LOCK_FILE).acquire(f"state folder {folder}")
    except InUseError as exc:
        raise InUseError(f"{exc}: another rack keeps its state there; give this rack its own "
                         "state_dir (or --state-dir)") from None


def read_saved_ids(path: Path, config: RackConfig) -> tuple[dict[str, str], list[str]]:
    """The saved ``Name:N`` of each device of ``config`` that ``path`` holds, and a line for
    each problem found. An entry is kept only if it is a valid id with an instance and its
    device's Name (its exact instance when the rack file gives one); everything else is left
    out and reported. A missing file is no problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, []
    except (OSError, ValueError) as exc:
        return {}, [f"{path}: not readable as JSON ({exc}); rebuilt from the rack file"]
    ids = data.get("device_ids") if isinstance(data, dict) else None
    if not isinstance(ids, dict):
        return {}, [f"{path}: no device_ids mapping; rebuilt from the rack file"]
    # the rack file's rules make each Name either one bare id or explicit instances only, so
    # an entry with its own device's Name can't be another device's id
    wanted = {dev.id: validate_device_id(dev.id) for dev in config.devices}
    out: dict[str, str] = {}
    problems: list[str] = []
    for dev_id, saved in ids.items():
        if dev_id not in wanted:
            continue  # a device no longer in the file: forgotten
        name, instance = wanted[dev_id]
        try:
            got = validate_device_id(saved) if isinstance(saved, str) else None
        except ValueError:
            got = None
        if got is None or got[1] is None or got[0] != name:
            why = f"{saved!r} is not an id {name}:N"
        elif instance is not None and got[1] != instance:
            why = f"{saved!r} differs from the file's {dev_id!r}"
        else:
            out[dev_id] = f"{got[0]}:{got[1]}"
            continue
        problems.append(f"{path}: device {dev_id!r}: {why}; ignored, it asks for "
                        f"{dev_id!r} again")
    return out, problems


def write_saved_ids(path: Path, config: RackConfig, ids: dict[str, str]) -> None:
    """Save each device's id, atomically (a crash leaves the old file or the new one)."""
    atomic_write_text(path, json.dumps({"rack": config.name, "device_ids": ids}, indent=1))
