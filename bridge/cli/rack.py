"""``rack`` and ``status``: run a rack of devices from a YAML file, and ask it how they are."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from ..transport.layout import HEARTBEAT_STALE_S
from .common import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    """Add rack and status to the top-level subparsers, each with its handler."""
    sp = sub.add_parser(
        "rack", help="run a rack of devices from a YAML file (or check it, or reload it)",
        description="A headless rack: every device of FILE.yaml in its own supervised "
                    "process, restarted by its policy, with ids and plugin states kept across "
                    "restarts. Runs until Ctrl-C / SIGTERM (every device then stops and "
                    "deregisters); SIGHUP re-reads the file. docs/configuration.md has the "
                    "format.",
        epilog="examples:\n"
               "  discolink-bridge rack configs/demo.yaml     # run it (status table, then logs)\n"
               "  discolink-bridge rack check configs/vst3.yaml   # validate only (exit 2 if bad)\n"
               "  discolink-bridge rack schema > rack.schema.json # JSON Schema for editors\n"
               "  discolink-bridge rack reload                # re-read the running rack's file\n"
               "  discolink-bridge status                     # what the running rack is doing",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("target", metavar="FILE|check|schema|reload",
                    help="a rack file to run, or one of the actions")
    sp.add_argument("file", nargs="?", type=Path, metavar="FILE", help="for check: the file")
    sp.add_argument("--state-dir", type=Path, metavar="DIR",
                    help="keep ids and plugin states here instead of the rack's state folder")
    sp.set_defaults(handler=cmd_rack)

    sp = sub.add_parser("status", help="ask the running rack how its devices are",
                        description="Ask the rack running in the namespace (through its "
                                    "control socket) for each device's pid, state (hung: "
                                    f"no heartbeat for {HEARTBEAT_STALE_S:.0f} s, it is "
                                    "being restarted), claim, "
                                    "link tag, ring fill, underruns, restarts and CPU %, "
                                    "and the last error line of each device that failed.")
    sp.add_argument("--json", action="store_true", help="print the answer as JSON")
    sp.set_defaults(handler=cmd_status)


def _rack_namespace(args: argparse.Namespace) -> str:
    from ..transport.shm import namespace_from_env

    return namespace_from_env(args.namespace)


def cmd_rack(args: argparse.Namespace) -> int:
    from ..rack import config as rack_config
    from ..rack.supervisor import Rack, format_status

    if args.target == "schema":
        print(json.dumps(rack_config.json_schema(), indent=1))
        return 0
    if args.target == "reload":
        return _reload(args)
    if args.target == "check":
        if args.file is None:
            raise UsageError("rack check needs a FILE")
        path = args.file
    else:
        if args.file is not None:
            raise UsageError(f"unexpected {args.file}: give one rack FILE (or check FILE)")
        path = Path(args.target)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() \
            else "does not exist"
        raise UsageError(f"rack file {path} {what}; give a YAML file such as configs/demo.yaml")
    state_dir = args.state_dir.resolve() if args.state_dir else None
    config = _checked(args, path, state_dir, "nothing started")
    if config is None:
        return 2
    if args.target == "check":
        print(f"{path}: ok, rack {config.name!r} with {len(config.devices)} device(s)")
        return 0
    rack = Rack(path.resolve(), config, state_dir=state_dir)  # status names it for reload
    signal.signal(signal.SIGINT, lambda *_: rack.stop())
    signal.signal(signal.SIGTERM, lambda *_: rack.stop())
    signal.signal(signal.SIGHUP, lambda *_: rack.request_reload())

    def ready() -> None:
        print(format_status(rack.status()), flush=True)
        print(f"rack {config.name} ready: {len(rack.children)} device(s), namespace "
              f"{rack.namespace!r}, pid {os.getpid()}; Ctrl-C stops it, SIGHUP or "
              "'discolink-bridge rack reload' re-reads the file", flush=True)

    try:
        rack.start()
        rack.run(on_ready=ready)
    finally:
        rack.shutdown()
    print(f"rack {config.name} stopped", flush=True)
    return 0


def _checked(args: argparse.Namespace, path: Path, state_dir: Path | None, outcome: str):
    """The validated rack file, or None after printing its problems (the caller exits 2):
    one validator for check, run and reload."""
    from ..rack import config as rack_config

    env = dict(os.environ)
    if args.namespace:
        env["DISCOLINK_NAMESPACE"] = args.namespace
    try:
        return rack_config.load_rack(path, environ=env, state_dir=state_dir)
    except rack_config.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"discolink-bridge rack: {path}: {len(exc.issues)} error(s); {outcome}",
              file=sys.stderr)
        return None


def _reload(args: argparse.Namespace) -> int:
    """Check the running rack's file here first, with the same validator, so an invalid
    file exits 2 and is never sent; then ask the rack to reload it."""
    from ..rack.supervisor import ask

    namespace = _rack_namespace(args)
    status = ask(namespace, "status")
    if status.get("ok") and status.get("file"):
        state_dir = Path(status["state_dir"]) if status.get("state_dir") else None
        if _checked(args, Path(status["file"]), state_dir,
                    "not reloaded, the rack runs as it was") is None:
            return 2
    reply = ask(namespace, "reload", timeout=120)
    text = reply.get("message") or reply.get("error")
    if reply.get("ok"):
        print(text)
        return 0
    print(f"discolink-bridge rack: {text}", file=sys.stderr)
    return 2 if str(text).startswith("reload rejected") else 1


def cmd_status(args: argparse.Namespace) -> int:
    from ..rack.supervisor import ask, format_status

    reply = ask(_rack_namespace(args), "status")
    if not reply.get("ok"):
        raise RuntimeError(reply.get("error", "the rack did not answer"))
    reply.pop("ok")
    print(json.dumps(reply, indent=1) if args.json else format_status(reply))
    return 0
