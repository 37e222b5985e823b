"""The project's promises about itself: the README's two commands and CI run the same thing."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README has no sh code block"
    assert text.index(block.group(0)) < 1500, "the commands are not on the README's first screen"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_first_screen_gives_exactly_two_commands_setup_demo_and_setup_tests():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].startswith("./setup.sh && ") and "demo" in commands[0]
    assert commands[1].startswith("./setup.sh && ") and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in [line.strip() for line in ci]


def imports_of(path: Path) -> list[str]:
    """Absolute module names imported by a file under bridge/ (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.append(".".join([*base, node.module] if node.module else base))
            else:
                out.append(node.module or "")
        elif isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
    return out


def test_midi_is_codecs_on_the_transport_only():
    """bridge/midi may use the standard library, mido and the transport's command table; no
    adapter, no rack, no CLI, no audio or device library."""
    for path in (ROOT / "bridge" / "midi").glob("*.py"):
        for module in imports_of(path):
            if module.startswith("bridge."):
                assert module.startswith(("bridge.midi", "bridge.transport")), \
                    f"{path.name} imports {module}"
            else:
                assert module.split(".")[0] not in {"numpy", "soundfile", "rich", "jack",
                                                    "pedalboard", "rtmidi", "yaml"}, \
                    f"{path.name} imports {module}"


def test_adapters_never_import_the_rack_or_the_cli():
    for path in (ROOT / "bridge" / "adapters").glob("*.py"):
        for module in imports_of(path):
            assert not module.startswith(("bridge.rack", "bridge.cli")), \
                f"{path.name} imports {module}"


def test_transport_never_imports_an_adapter_or_higher_layer():
    """Dependencies point downward: transport imports only stdlib, numpy and itself."""
    for path in (ROOT / "bridge" / "transport").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                assert not (node.level >= 2 or (module.startswith("bridge.")
                            and not module.startswith("bridge.transport"))), \
                    f"{path.name} imports {'.' * node.level}{module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("bridge.") or alias.name.startswith(
                        "bridge.transport"), f"{path.name} imports {alias.name}"
                    top = alias.name.split(".")[0]
                    assert top not in {"mido", "soundfile", "rich", "jack", "pedalboard",
                                       "rtmidi", "yaml"}, f"{path.name} imports {top}"


def test_transport_modules_import_each_other_in_one_direction():
    """No import cycle inside bridge/transport, counting imports inside functions too (a local
    import that dodges a cycle is still one): each module builds only on those below it."""
    package = ROOT / "bridge" / "transport"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for name in modules:
        graph[name] = set()
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
                graph[name] |= {t.split(".")[0] for t in targets} & modules
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, f"import cycle: {' -> '.join([*path, name])}"
        if name not in done:
            for dependency in sorted(graph[name]):
                visit(dependency, [*path, name])
            done.add(name)

    for name in sorted(modules):
        visit(name, [])


def test_a_message_names_its_type_from_the_command_table_when_only_message_py_is_imported():
    """message.py doesn't import the table; repr() still names the type (commands.py installs
    its name_of as the package loads), in a process that asked for message.py alone."""
    probe = ("from bridge.transport.message import Message\nm = Message()\nm.type = 0x0101\n"
             "print(repr(m))\nm.type = 0x7777\nm.flags = 1\nprint(repr(m))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.stdout.splitlines() == ["<Message NoteOn seq=0 offset=0 len=0>",
                                     "<Message Unknown(0x7777) response seq=0 offset=0 len=0>"]
