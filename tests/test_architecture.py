"""The import directions of docs/architecture.md, checked: plugin -> wire <- server -> engine; CLI -> wire.

Two checks each: a static one over every ``import`` statement in the files
(catches a lazy import inside a function), and a live one that imports the
modules in a fresh interpreter and looks at ``sys.modules`` (catches what a
dependency pulls in). And one name per file: every module of the project is
reached by exactly one import name, and none is loaded by its file path.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Where import names start: the three source roots of pyproject.toml, the plug-in folder as GIMP lays it
# out (flat: dfi_bridge, dfi_link, dfi_preview, dfi_live), the tests (helpers.*), and the checkout itself
# (daemon.dfi_wire… would be a second name, so it is a root too).
ROOTS = (REPO / "daemon", REPO / "plugin", REPO / "plugin" / "dfi_plugin", REPO / "tests", REPO)
CHECKED = ("dfi_engine", "daemon", "plugin", "install", "tests")
BY_PATH = {"spec_from_file_location", "SourceFileLoader", "run_path", "load_source", "SourcelessFileLoader"}
WIRE_ALLOWED = {"zmq", "msgpack", "dfi_wire"}  # plus the standard library
PLUGIN_ALLOWED = WIRE_ALLOWED | {"gi", "dfi_bridge", "dfi_link", "dfi_preview", "dfi_live"}
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


def module_file(name: str) -> Path | None:
    """The file an absolute import name loads, by the first root that has it (as sys.path would)."""
    parts = name.split(".")
    for root in ROOTS:
        for f in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
            if f.is_file():
                return f
    return None


def own_name(path: Path) -> str:
    """The dotted name ``path`` has under the nearest root (its package, for relative imports)."""
    root = max((r for r in ROOTS if path.is_relative_to(r)), key=lambda r: len(r.parts))
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, source: str) -> set[str]:
    """Every absolute module name ``path`` imports, relative imports resolved, ``from p import m`` as ``p.m``
    where ``m`` is a module."""
    package = own_name(path) if path.name == "__init__.py" else own_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                base = ".".join([*up, *([node.module] if node.module else [])])
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    return names


def names_per_file(sources: dict[Path, str]) -> dict[Path, set[str]]:
    """{project file: the import names the project's code reaches it by}."""
    seen: dict[Path, set[str]] = {}
    for path, source in sources.items():
        for name in imported_names(path, source):
            f = module_file(name)
            if f is not None and not f.is_relative_to(REPO / ".venv"):
                seen.setdefault(f, set()).add(name)
    return seen


def loads_by_path(source: str) -> set[str]:
    """Calls that load a module from a file path (importlib's spec_from_file_location and kin)."""
    calls = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in BY_PATH:
                calls.add(name)
    return calls


def project_sources() -> dict[Path, str]:
    return {f: f.read_text() for folder in CHECKED for f in sorted((REPO / folder).rglob("*.py"))}


def test_every_module_has_one_import_name_and_none_is_loaded_by_path():
    sources = project_sources()
    twice = {str(f.relative_to(REPO)): sorted(n) for f, n in names_per_file(sources).items() if len(n) > 1}
    assert not twice, f"reached by more than one import name: {twice}"
    by_path = {str(f.relative_to(REPO)): c for f, s in sources.items() if (c := loads_by_path(s))}
    assert not by_path, f"modules loaded by file path: {by_path}"


def test_the_name_check_sees_a_second_name_and_a_load_by_path():
    """The check can fail: a module that reaches the wire through the checkout folder, the bridge through the
    package, or loads a file by path is caught (a temporary file, never written into the tree)."""
    sources = project_sources()
    bad = REPO / "daemon" / "dfi_daemon" / "cli" / "bad_example.py"
    sources[bad] = ("import daemon.dfi_wire.protocol\nfrom dfi_plugin import dfi_bridge\n"
                    "from ..server import runner\nimport importlib.util\n"
                    "spec = importlib.util.spec_from_file_location('x', 'x.py')\n")
    names = names_per_file(sources)
    assert names[REPO / "daemon" / "dfi_wire" / "protocol.py"] >= {"dfi_wire.protocol", "daemon.dfi_wire.protocol"}
    assert names[REPO / "plugin" / "dfi_plugin" / "dfi_bridge.py"] == {"dfi_bridge", "dfi_plugin.dfi_bridge"}
    assert "dfi_daemon.server.runner" in names[REPO / "daemon" / "dfi_daemon" / "server" / "runner.py"]
    assert loads_by_path(sources[bad]) == {"spec_from_file_location"}


@pytest.mark.parametrize("folder, allowed", [("daemon/dfi_wire", WIRE_ALLOWED), ("plugin/dfi_plugin", PLUGIN_ALLOWED)])
def test_wire_and_plugin_import_only_stdlib_zmq_msgpack(folder, allowed):
    bad = {str(f.relative_to(REPO)): outside(imported_roots(f), allowed) for f in py_files(folder)}
    assert not {k: v for k, v in bad.items() if v}, "the plug-in side may use the stdlib, pyzmq and msgpack only"


def test_engine_never_imports_the_daemon():
    for f in py_files("dfi_engine"):
        roots = imported_roots(f)
        assert not roots & {"dfi_daemon", "dfi_wire", "zmq", "msgpack"}, f"{f}: the engine is pure computation"


def test_server_and_cli_reach_the_wire_by_its_own_name():
    """Only the wire's own modules import it relatively: everyone else says ``dfi_wire``, as GIMP does."""
    for f in py_files("daemon/dfi_daemon"):
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
    code = (f"import sys; sys.path.insert(0, 'plugin/dfi_plugin'); {imports}; "
            f"bad = [m for m in {banned!r} if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_wire_and_bridge_load_without_heavy_modules():
    loads_without("import dfi_wire.protocol, dfi_wire.client, dfi_bridge, dfi_link", HEAVY)


def test_talking_to_the_daemon_does_not_load_the_engine():
    """The CLI's daemon commands start fast: no torch, engine or server behind ``dfi daemon status``."""
    loads_without("import dfi_daemon.cli", ("torch", "dfi_engine", "dfi_daemon.server.daemon", "ray"))


def test_scale_out_is_called_by_the_cli_and_never_calls_it():
    """dfi_daemon.scale runs requests on Ray for the CLI: it knows the server's loader, not the CLI's files."""
    for f in py_files("daemon/dfi_daemon/scale"):
        tree = ast.parse(f.read_text())
        up = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level >= 2
              and (n.module or "").split(".")[0] == "cli"]
        absolute = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level
                    and (n.module or "").startswith("dfi_daemon.cli")]
        assert not up and not absolute, f"{f} imports the CLI"


def test_the_front_door_holds_only_io():
    """The front door's memory is its budget's measure: no torch, numpy or engine may load there."""
    loads_without("import dfi_daemon.server.front", ("torch", "numpy", "PIL", "dfi_engine", "dfi_daemon.server.daemon"))


# The edit path a newcomer follows (issue 21): the client, the protocol, the daemon's dispatch, the runner, the
# neighbour sources, the face pipeline and the engine's edit. Each function small enough to read at once.
EDIT_PATH = ("daemon/dfi_wire/client.py", "daemon/dfi_wire/protocol.py", "daemon/dfi_wire/validation.py",
             "daemon/dfi_daemon/server/daemon.py",
             "daemon/dfi_daemon/server/runner.py", "daemon/dfi_daemon/server/sources.py",
             "dfi_engine/faces/pipeline.py", "dfi_engine/faces/session.py", "dfi_engine/edit.py",
             "plugin/dfi_plugin/gimp-dfi.py", "plugin/dfi_plugin/dfi_bridge.py", "plugin/dfi_plugin/dfi_link.py")
MAX_COMPLEXITY = 10  # ruff's C901 (mccabe)
MAX_LINES = 60  # a function, from its def (or first decorator) to its last line


def too_complex(files: list[Path]) -> list[str]:
    """ruff's C901 findings at MAX_COMPLEXITY, one line each (empty: all simple enough)."""
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "C901",
                        "--config", f"lint.mccabe.max-complexity={MAX_COMPLEXITY}", "--output-format", "concise",
                        *map(str, files)], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return [line for line in r.stdout.splitlines() if "C901" in line]


def too_long(files: list[Path]) -> list[str]:
    """Functions (methods and nested ones too) longer than MAX_LINES, as 'file:line name (n lines)'."""
    found = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = node.end_lineno - first + 1
                if n > MAX_LINES:
                    found.append(f"{f}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_the_edit_path_has_no_function_over_complexity_10_or_60_lines():
    files = [REPO / f for f in EDIT_PATH]
    assert all(f.is_file() for f in files), files
    findings = too_complex(files) + too_long(files)
    assert not findings, "split these by phase:\n" + "\n".join(findings)


def test_the_edit_path_check_finds_a_long_complex_function(tmp_path):
    """The check itself can fail: a function with eleven branches over sixty lines is reported twice."""
    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(11))
    body = branches + "    y = 0\n" * 40 + "    return -1\n"
    f = tmp_path / "sprawl.py"
    f.write_text(f"def sprawl(x):\n{body}")
    assert len(too_complex([f])) == 1 and "sprawl" in too_long([f])[0]


def test_every_op_of_the_protocol_has_one_handler_in_the_daemon():
    """The daemon's dispatch is a table: an op added to the protocol without a handler fails here, not at run time."""
    from dfi_daemon.server.daemon import HANDLERS, Daemon
    from dfi_wire import protocol as P

    assert set(HANDLERS) == set(P.OPS)
    assert all(callable(getattr(Daemon, name, None)) for name in HANDLERS.values())
