"""Process wiring of the command line: the error boundary and an import graph without cycles.

A :class:`~leadscore.errors.LeadscoreError` (the user can fix it) ends a command with one line and
exit 2; any other exception is a bug and must surface with its traceback (exit 1), not pass for a
user error. Sub-command modules share ``leadscore.cli_context``, never ``leadscore.cli`` itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.errors import (
    ConfigError,
    DataError,
    LeadscoreError,
    ModelError,
    NotEnoughDataError,
    StoreError,
)
from tests.conftest import REPO_ROOT

#: installed module name → source folder (setuptools package-dir in pyproject.toml)
PACKAGE_DIRS = {
    "leadscore": REPO_ROOT / "leadscore",
    "leadscore.features": REPO_ROOT / "features",
    "leadscore.training": REPO_ROOT / "training",
    "leadscore.serving": REPO_ROOT / "serving",
}
CLI_MODULES = [
    "leadscore.cli",
    "leadscore.cli_context",
    "leadscore.features.cli",
    "leadscore.importers.cli",
    "leadscore.training.cli",
    "leadscore.training.sla_cli",
    "leadscore.training.eval_cli",
    "leadscore.serving.cli",
]


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if not any(name.startswith(other + ".") or name == other
                       for other in PACKAGE_DIRS if other != package and other.startswith(package + ".")):
                found[name] = path
    return found


def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {m: {i for i in _imports(p, module_level_only) if i in modules and i != m} for m, p in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` if there is any (depth-first search with a path stack)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cli_modules_import_each_other_without_a_cycle() -> None:
    """Counting imports inside functions too: the command modules form a tree under ``leadscore.cli``."""
    graph = _graph(module_level_only=False)
    assert set(CLI_MODULES) <= set(graph)
    cli_graph = {m: graph[m] & set(CLI_MODULES) for m in CLI_MODULES}
    assert _cycle(cli_graph) is None, _cycle(cli_graph)
    assert not [m for m in CLI_MODULES if "leadscore.cli" in graph[m]]


def test_package_has_no_import_cycle_at_module_level() -> None:
    assert _cycle(_graph(module_level_only=True)) is None


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", CLI_MODULES[1:])
def test_each_sub_cli_imports_alone(module: str) -> None:
    """In a fresh interpreter, without ``leadscore.cli`` loaded first (what a cycle would break)."""
    code = f"import sys, {module}; assert 'leadscore.cli' not in sys.modules, 'pulled in leadscore.cli'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


# ------------------------------------------------------------------------------ error boundary


def test_every_domain_error_is_a_leadscore_error_and_no_builtin_one() -> None:
    from leadscore.features.engine import FeatureInputError
    from leadscore.history import HistoryError
    from leadscore.importers.common import ImportFailed
    from leadscore.serving.scoring import ModelLoadError
    from leadscore.training.bundle import SchemaMismatchError
    from leadscore.training.evaluate import DataMissingError
    from leadscore.training.flat import LeakageError, MappingError
    from leadscore.training.registry import ModelNotFoundError
    from leadscore.training.replay import ScoredFrameError
    from leadscore.training.split import InsufficientDataError

    expected = {
        ConfigError: LeadscoreError, HistoryError: DataError, ImportFailed: DataError, FeatureInputError: DataError,
        MappingError: DataError, LeakageError: DataError, DataMissingError: DataError, ScoredFrameError: DataError,
        InsufficientDataError: NotEnoughDataError, ModelNotFoundError: ModelError, SchemaMismatchError: ModelError,
        ModelLoadError: ModelError, StoreError: LeadscoreError,
    }
    for cls, base in expected.items():
        assert issubclass(cls, base), cls
        # a bug raising ValueError/LookupError/OSError must not be mistaken for one of these
        assert not issubclass(cls, ValueError | LookupError | OSError), cls
    assert (LeadscoreError.exit_code, NotEnoughDataError.exit_code) == (2, 3)


def test_user_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "no-such-crm")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and "no-such-crm" in lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_config_error_from_any_command_is_exit_2() -> None:
    result = CliRunner().invoke(app, ["--set", "nonsense", "features", "list"])
    assert result.exit_code == 2
    assert result.output.startswith("config error: override 'nonsense' must look like section.key=value")


def test_message_with_brackets_is_printed_verbatim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import leadscore.history

    def fail(*_: object, **__: object) -> None:
        raise DataError("columns [lead_id, as_of] are missing")

    monkeypatch.setattr(leadscore.history, "load_history", fail)
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert (result.exit_code, result.output.strip()) == (2, "error: columns [lead_id, as_of] are missing")


@pytest.mark.parametrize("bug", [ValueError("bad internal state"), KeyError("missing_key"), TypeError("oops")])
def test_internal_bug_keeps_its_traceback_and_exit_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      bug: Exception) -> None:
    import leadscore.history

    def fail(*_: object, **__: object) -> None:
        raise bug

    monkeypatch.setattr(leadscore.history, "load_history", fail)
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.exception is bug  # propagated, not turned into a one-line "error:"
    assert "error:" not in result.output


def test_internal_bug_prints_a_traceback_from_the_installed_command(tmp_path: Path) -> None:
    """The real console script: a bug shows Python's traceback and exits 1."""
    code = (
        "import sys, leadscore.history as h\n"
        "def fail(*a, **k): raise RuntimeError('an internal bug')\n"
        "h.load_history = fail\n"
        "from leadscore.cli import app\n"
        f"sys.argv = ['leadscore', 'validate', {str(tmp_path)!r}]\n"
        "app()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and "RuntimeError: an internal bug" in out.stderr
