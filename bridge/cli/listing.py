"""``list`` and ``cleanup``: what the registry holds, and what dead devices left behind."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add list and cleanup to the top-level subparsers, each with its handler."""
    sp = sub.add_parser("list", help="print the registry",
                        description="List the devices registered in the namespace.")
    sp.add_argument("--json", action="store_true", help="print a JSON list of objects with "
                    "id, pid, channels, sample_rate, block_size, mode, claimed, host_pid, "
                    "link_tag, xruns, nonfinite_blocks")
    sp.set_defaults(handler=cmd_list)

    sp = sub.add_parser(
        "cleanup", help="remove what dead devices left in shared memory",
        description="Free the registry slots of devices that died (kill -9, a crash) and "
                    "remove the shared-memory segments (/dev/shm) that no live device owns. A "
                    "namespace with no device left loses its registry too. Running devices "
                    "and their hosts are never touched. Safe to run at any time.",
        epilog="examples:\n  discolink-bridge cleanup --dry-run   # what would go, in this "
               "namespace\n  discolink-bridge cleanup --all       # every namespace of "
               "this user", formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--all", action="store_true",
                    help="every namespace of this user, not just the current one")
    sp.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    sp.add_argument("--force", action="store_true",
                    help="also remove a corrupt registry (wrong size, bad magic, another "
                         "protocol) and its namespace's segments, each only if no running "
                         "process maps it")
    sp.add_argument("--json", action="store_true", help="print a JSON list, one object per "
                    "namespace: namespace, live, freed, removed, corrupt (why, or null), "
                    "mapped (name: pids still mapping it)")
    sp.set_defaults(handler=cmd_cleanup)


def cmd_list(args: argparse.Namespace) -> int:
    from ..transport import Registry
    from ..transport.shm import namespace_from_env

    registry = Registry.find(args.namespace)
    devices = []
    if registry is not None:
        try:
            devices = registry.scan()
        finally:
            registry.close()
    if args.json:
        print(json.dumps([d.to_json() for d in devices]))
        return 0
    if not devices:
        print(f"no devices in namespace {namespace_from_env(args.namespace)!r}")
        return 0
    print(f"{'ID':<24} {'PID':>7} {'CH':>3} {'RATE':>6} {'BLOCK':>5} {'MODE':<10} "
          f"{'XRUNS':>5} {'NAN':>5} CLAIM")
    for d in devices:
        claim = f"host {d.host_pid}" if d.claimed else "-"
        if d.link_tag:
            claim += f" [{d.link_tag}]"
        print(f"{d.id:<24} {d.pid:>7} {d.channels:>3} {d.sample_rate:>6} {d.block_size:>5} "
              f"{d.mode:<10} {d.xruns:>5} {d.nonfinite_blocks:>5} {claim}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Sweep one namespace or all; a corrupt one is reported and the rest go on. Exit 1 when
    a corrupt registry is left behind (without --force, or mapped by a live process)."""
    from ..transport.registry import sweep_namespace
    from ..transport.shm import namespace_from_env, namespace_prefix, namespaces

    names = namespaces() if args.all else [namespace_from_env(args.namespace)]
    sweeps = [s for ns in names
              if (s := sweep_namespace(ns, dry_run=args.dry_run, force=args.force))]
    left = [s for s in sweeps if s.corrupt and (s.mapped or not args.force)]
    if args.json:
        print(json.dumps([s.to_json() for s in sweeps]))
    else:
        verb = "would remove" if args.dry_run else "removed"
        for s in sweeps:
            removed = ", ".join(n[len(namespace_prefix(s.namespace)):] for n in s.removed)
            parts = [f"{verb} {len(s.removed)} segment(s)" + (f" ({removed})" if removed
                                                               else "")]
            if s.corrupt:
                if not args.force:
                    parts = ["left in place (see below)"]
                parts += [f"kept {n[len(namespace_prefix(s.namespace)):]}, mapped by pid "
                          f"{', '.join(map(str, pids))}" for n, pids in s.mapped.items()]
                print(f"namespace {s.namespace!r}: corrupt ({_short(s.corrupt)}); "
                      + "; ".join(parts))
                continue
            if s.freed:
                parts.append(f"{'would free' if args.dry_run else 'freed'} the slot(s) of "
                             f"dead device(s) {', '.join(s.freed)}")
            parts.append(f"kept {len(s.live)} live device(s)" + (
                f" ({', '.join(s.live)})" if s.live else ""))
            print(f"namespace {s.namespace!r}: " + "; ".join(parts))
        if not sweeps:
            where = "any namespace" if args.all else f"namespace {names[0]!r}"
            print(f"nothing to clean: no registry for {where}")
    for s in left:  # stdout has the summary; each namespace left corrupt is said on stderr
        how = (f"still mapped by pid {', '.join(str(p) for ps in s.mapped.values() for p in ps)}"
               if s.mapped else "run 'discolink-bridge cleanup --force' to remove it")
        print(f"discolink-bridge cleanup: namespace {s.namespace!r}: {_short(s.corrupt)}; "
              f"{how}", file=sys.stderr)
    return 1 if left else 0


def _short(reason: str) -> str:
    """A corrupt registry's fault without the advice that follows it."""
    return reason.split(": it is corrupt")[0]
