"""The import directions of docs/architecture.md, checked: plugin -> wire <- server -> engine; CLI -> wire.

Two checks each: a static one over every ``import`` statement in the files
(catches a lazy import inside a function), and a live one that imports the
modules in a fresh interpreter and looks at ``sys.modules`` (catches what a
dependency pulls in).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WIRE_ALLOWED = {"zmq", "msgpack", "dfi_wire"}  # plus the standard library
PLUGIN_ALLOWED = WIRE_ALLOWED | {"gi", "dfi_bridge", "dfi_preview"}
HEAVY = ("torch", "numpy", "PIL", "scipy", "dfi_engine", "dfi_daemon")


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (relative imports resolve to their package)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add("." if node.level else node.module.split(".")[0])
    return roots


def outside(roots: set[str], allowed: set[str]) -> set[str]:
    return {r for r in roots if r != "." and r not in allowed and r not in sys.stdlib_module_names}


def py_files(folder: str) -> list[Path]:
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, folder
    return files


@pytest.mark.parametrize("folder, allowed", [("daemon/wire", WIRE_ALLOWED), ("plugin", PLUGIN_ALLOWED)])
def test_wire_and_plugin_import_only_stdlib_zmq_msgpack(folder, allowed):
    bad = {str(f.relative_to(REPO)): outside(imported_roots(f), allowed) for f in py_files(folder)}
    assert not {k: v for k, v in bad.items() if v}, "the plug-in side may use the stdlib, pyzmq and msgpack only"


def test_engine_never_imports_the_daemon():
    for f in py_files("dfi_engine"):
        roots = imported_roots(f)
        assert not roots & {"dfi_daemon", "dfi_wire", "zmq", "msgpack"}, f"{f}: the engine is pure computation"


def test_server_and_cli_reach_the_wire_by_its_own_name():
    """Only the wire's own modules import it relatively: everyone else says ``dfi_wire``, as GIMP does."""
    for f in py_files("daemon"):
        if "wire" in f.relative_to(REPO / "daemon").parts:
            continue
        tree = ast.parse(f.read_text())
        rel = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level
               and n.module in ("protocol", "client")]
        assert not rel, f"{f} imports {rel} relatively"


def test_the_checker_sees_a_bad_import(tmp_path):
    """The static check can fail: a lazy torch import inside a function is found."""
    f = tmp_path / "bad.py"
    f.write_text("import json\nfrom . import x\n\ndef f():\n    import torch\n    from numpy import ndarray\n")
    assert outside(imported_roots(f), WIRE_ALLOWED) == {"torch", "numpy"}


def loads_without(imports: str, banned: tuple[str, ...]) -> None:
    """Run ``imports`` in a fresh interpreter and fail if any ``banned`` module got loaded."""
    code = f"import sys; sys.path.insert(0, 'plugin'); {imports}; bad = [m for m in {banned!r} if m in sys.modules]; " \
           "assert not bad, bad"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_wire_and_bridge_load_without_heavy_modules():
    loads_without("import dfi_wire.protocol, dfi_wire.client, dfi_bridge", HEAVY)


def test_talking_to_the_daemon_does_not_load_the_engine():
    """The CLI's daemon commands start fast: no torch, engine or server behind ``dfi daemon status``."""
    loads_without("import dfi_daemon.cli", ("torch", "dfi_engine", "dfi_daemon.server.daemon", "ray"))


def test_scale_out_is_called_by_the_cli_and_never_calls_it():
    """dfi_daemon.scale runs requests on Ray for the CLI: it knows the server's loader, not the CLI's files."""
    for f in py_files("daemon/scale"):
        tree = ast.parse(f.read_text())
        up = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level >= 2
              and (n.module or "").split(".")[0] == "cli"]
        absolute = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level
                    and (n.module or "").startswith("dfi_daemon.cli")]
        assert not up and not absolute, f"{f} imports the CLI"


def test_the_front_door_holds_only_io():
    """The front door's memory is its budget's measure: no torch, numpy or engine may load there."""
    loads_without("import dfi_daemon.server.front", ("torch", "numpy", "PIL", "dfi_engine", "dfi_daemon.server.daemon"))
