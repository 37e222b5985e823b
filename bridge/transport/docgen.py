"""Generate the tables of docs/protocol.md from ``layout`` and ``commands``.

The doc holds hand-written prose around generated blocks delimited by
``<!-- BEGIN GENERATED: key -->`` and ``<!-- END GENERATED: key -->``. Run
``python -m bridge.transport.docgen`` to rewrite them, or with ``--check`` to exit 1 when
the doc has drifted from the code (tests/test_protocol_doc.py runs the check).
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
from pathlib import Path

from . import commands, layout

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<key>[\w-]+) -->\n)(?P<body>.*?)"
                    r"(<!-- END GENERATED: (?P=key) -->)", re.S)


def _struct_table(s: layout.Struct) -> str:
    rows = ["| Offset | Size | Type | Field | Written by | Atomic access | Meaning |",
            "|---:|---:|---|---|---|---|---|"]
    for f in s.fields:
        rows.append(f"| {s.offset(f.name)} | {f.size} | `{f.type}` | `{f.name}` | {f.writer} | "
                    f"{f.atomic or '-'} | {f.meaning} |")
    rows.append(f"\nTotal size: **{s.size} bytes**.")
    return "\n".join(rows)


def _enum_table(e: type[enum.Enum], what: str = "Value") -> str:
    rows = [f"| {what} | Name |", "|---:|---|"]
    for m in e:
        value = f"0x{int(m.value):x}" if issubclass(e, enum.IntFlag) else str(int(m.value))
        rows.append(f"| {value} | `{m.name}` |")
    return "\n".join(rows)


def _constants() -> str:
    rows = ["| Constant | Value | Meaning |", "|---|---:|---|"]
    for name, meaning in layout.CONSTANTS:
        v = getattr(layout, name)
        rows.append(f"| `{name}` | {v} | {meaning} |")
    rows.append(f"| `REGISTRY_MAGIC` | 0x{layout.REGISTRY_MAGIC:08X} | registry magic, the "
                "bytes \"DLRG\" |")
    rows.append(f"| `SEGMENT_MAGIC` | 0x{layout.SEGMENT_MAGIC:08X} | transport magic, the "
                "bytes \"DLNK\" |")
    return "\n".join(rows)


def _command_table() -> str:
    rows = ["| Code | Name | Direction | Request payload | Response payload | Fragmentable | "
            "Meaning |", "|---:|---|---|---|---|---|---|"]
    for c in commands.COMMANDS:
        resp = c.response.describe() if c.response else "-"
        rows.append(f"| 0x{c.code:04X} | `{c.name}` | {c.direction} | {c.request.describe()} | "
                    f"{resp} | {'yes' if c.fragmentable else 'no'} | {c.summary} |")
    return "\n".join(rows)


def _segment_example() -> str:
    rows = ["| Channels | Return ring | Command ring | Response ring | Audio ring | "
            "Return ring offset | Total bytes |", "|---:|---|---:|---:|---:|---:|---:|"]
    for ch, ret in ((0, False), (1, False), (2, False), (2, True), (12, False), (12, True)):
        s = layout.SegmentLayout.compute(ch, ch if ret else 0)
        rows.append(f"| {ch} | {'yes' if ret else 'no'} | {s.command_ring_offset} | "
                    f"{s.response_ring_offset} | {s.audio_ring_offset} | "
                    f"{s.return_ring_offset} | {s.total_size} |")
    return "\n".join(rows)


def generated_blocks() -> dict[str, str]:
    """Every generated block of the doc, by key."""
    blocks = {
        "constants": _constants(),
        "commands": _command_table(),
        "segment-examples": _segment_example(),
        "enum-slot-state": _enum_table(layout.SlotState),
        "enum-device-state": _enum_table(layout.DeviceState),
        "enum-mode": _enum_table(layout.Mode),
        "enum-capability": _enum_table(layout.Capability, "Bit"),
        "enum-message-flag": _enum_table(layout.MessageFlag, "Bit"),
        "enum-error-code": _enum_table(commands.ErrorCode),
    }
    for s in layout.STRUCTS:
        blocks[f"struct-{s.name}"] = _struct_table(s)
    return blocks


def render(text: str) -> tuple[str, list[str]]:
    """The doc with every generated block refreshed, and the keys the doc lacks."""
    blocks = generated_blocks()
    seen = set()

    def sub(m: re.Match) -> str:
        key = m.group("key")
        if key not in blocks:
            raise KeyError(f"docs/protocol.md has a generated block {key!r} that docgen "
                           "does not know")
        seen.add(key)
        return f"{m.group(1)}{blocks[key]}\n{m.group(4)}"

    out = _BLOCK.sub(sub, text)
    return out, sorted(set(blocks) - seen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the doc is out of date")
    p.add_argument("--doc", type=Path, default=DOC)
    args = p.parse_args(argv)
    text = args.doc.read_text()
    new, missing = render(text)
    if missing:
        print(f"{args.doc}: missing generated blocks: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.check:
        if new != text:
            print(f"{args.doc} is out of date: run python -m bridge.transport.docgen",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new)
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
