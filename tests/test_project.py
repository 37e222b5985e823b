"""The project's promises about itself: the README's two commands and CI run the same thing."""

from __future__ import annotations

import ast
import re
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
