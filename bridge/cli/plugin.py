"""``plugin scan`` and ``plugin info``: find plugins and describe them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import UsageError, seconds


def register(sub: argparse._SubParsersAction) -> None:
    """Add plugin and its actions scan and info, each action with its handler."""
    sp = sub.add_parser("plugin", help="find plugins and describe them",
                        description="Plugin discovery: scan folders for VST3 (and AU on "
                                    "macOS) and LV2 plugins, or describe one plugin. Each "
                                    "plugin is probed in a subprocess with a timeout, so one that "
                                    "crashes or hangs is reported and the scan goes on.")
    psub = sp.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    scan = psub.add_parser("scan", help="list the plugins in the standard folders and DIRs",
                           description="List plugins with name, vendor, path, format, "
                                       "instrument or effect, inputs, outputs and parameter "
                                       "count (LV2: also URI, class, MIDI ports). Searches the "
                                       "standard VST3 folders, the LV2 path and any DIRs "
                                       "given. Results are cached and refreshed "
                                       "when the files change.")
    scan.add_argument("dirs", nargs="*", type=Path, metavar="DIR", help="more folders to search")
    scan.add_argument("--json", action="store_true", help="print a JSON list of objects")
    scan.add_argument("--timeout", type=seconds, default=30.0, metavar="S",
                      help="give up on a plugin that takes longer to probe (default 30 s)")
    scan.add_argument("--no-cache", action="store_true", help="probe everything again")
    scan.set_defaults(handler=cmd_plugin_scan)

    info = psub.add_parser("info", help="describe one plugin",
                           description="Load one plugin (in a subprocess) and describe it: "
                                       "name, vendor, path, format, is_instrument, is_effect, "
                                       "inputs, outputs and its parameters (name, min, max, "
                                       "default).")
    info.add_argument("path", metavar="PLUGIN",
                      help="a .vst3 bundle, lv2:URI or lv2:NAME, or builtin:NAME")
    info.add_argument("--plugin-name", metavar="NAME",
                      help="which plugin of a bundle that holds several")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--timeout", type=seconds, default=30.0, metavar="S",
                      help="give up after this long (default 30 s)")
    info.set_defaults(handler=cmd_plugin_info)


def cmd_plugin_scan(args: argparse.Namespace) -> int:
    from ..adapters import plugin_scan

    for d in args.dirs:
        if not d.is_dir():
            raise UsageError(f"no such folder: {d}")
    progress = None if args.json or not sys.stderr.isatty() else plugin_scan.console_progress()
    results = plugin_scan.scan(args.dirs, timeout=args.timeout, use_cache=not args.no_cache,
                               progress=progress)
    print(json.dumps(results, indent=1) if args.json else plugin_scan.format_table(results))
    return 0


def cmd_plugin_info(args: argparse.Namespace) -> int:
    from ..adapters import plugin_scan

    result = plugin_scan.info(args.path, plugin_name=args.plugin_name, timeout=args.timeout)
    print(json.dumps(result, indent=1) if args.json else plugin_scan.format_info(result))
    return 0
