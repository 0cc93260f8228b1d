"""The typed config tree: defaults load, overrides apply, errors name the key and the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.config import ConfigError, load_settings
from tests.conftest import REPO_ROOT


def _copy_configs(tmp_path: Path) -> Path:
    target = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", target)
    return target


def test_default_configs_load() -> None:
    s = load_settings(REPO_ROOT / "configs")
    assert s.horizons.sql_days == 30 and s.horizons.opp_days == 90
    assert "other" in s.activity_names
    assert s.config_hash() == load_settings(REPO_ROOT / "configs").config_hash()


def test_overrides_apply_and_change_the_hash() -> None:
    base = load_settings(REPO_ROOT / "configs")
    s = load_settings(REPO_ROOT / "configs", ["horizons.sql_days=14", "features.windows_days=[1, 7]"])
    assert s.horizons.sql_days == 14 and s.features.windows_days == [1, 7]
    assert s.config_hash() != base.config_hash()


def test_invalid_value_names_key_and_file(tmp_path: Path) -> None:
    configs = _copy_configs(tmp_path)
    path = configs / "leadscore.yaml"
    path.write_text(path.read_text().replace("sql_days: 30", "sql_days: thirty"))
    with pytest.raises(ConfigError) as exc:
        load_settings(configs)
    assert "horizons.sql_days" in str(exc.value) and "leadscore.yaml" in str(exc.value)


def test_unknown_key_and_unknown_activity_type_are_errors(tmp_path: Path) -> None:
    configs = _copy_configs(tmp_path)
    rules = configs / "rules.yaml"
    rules.write_text(rules.read_text().replace("page_view: 1", "page_veiw: 1"))
    with pytest.raises(ConfigError, match="page_veiw"):
        load_settings(configs)
    with pytest.raises(ConfigError, match=r"horizons\.sql_dayz"):
        load_settings(REPO_ROOT / "configs", ["horizons.sql_dayz=3"])


def test_section_defined_twice_is_an_error(tmp_path: Path) -> None:
    configs = _copy_configs(tmp_path)
    (configs / "extra.yaml").write_text("horizons:\n  sql_days: 10\n")
    with pytest.raises(ConfigError, match="defined in both"):
        load_settings(configs)


def test_cli_stops_with_a_readable_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--set", "horizons.sql_days=-1", "generate", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "horizons.sql_days" in result.output


def _command_paths(command: object, prefix: list[str]) -> list[list[str]]:
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths += _command_paths(sub, [*prefix, name])
    return paths


def test_every_command_has_help() -> None:
    runner = CliRunner()
    paths = _command_paths(typer.main.get_command(app), [])
    assert ["generate"] in paths and ["validate"] in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_the_tree_is_frozen_and_varied_by_copies() -> None:
    from pydantic import ValidationError

    s = load_settings(REPO_ROOT / "configs")
    for assign in (lambda: setattr(s, "horizons", s.horizons), lambda: setattr(s.horizons, "sql_days", 1),
                   lambda: setattr(s.training.split, "test_months", 1)):
        with pytest.raises(ValidationError, match="frozen"):
            assign()
    t = s.with_overrides(["horizons.sql_days=14", "training.trials=3"])
    assert (t.horizons.sql_days, t.training.trials) == (14, 3)
    assert s.horizons.sql_days == 30 and t.config_hash() != s.config_hash()
    with pytest.raises(ConfigError, match=r"overrides: horizons\.sql_days"):
        s.with_overrides(["horizons.sql_days=-1"])  # validated, unlike model_copy(update=...)


def test_derived_values_live_with_their_settings_object() -> None:
    """What the feature code compiles from a tree is built once per object, never served to a copy."""
    import copy
    import pickle

    from leadscore.features.engine import plan, static
    from leadscore.features.fit import fit_rules

    s = load_settings(REPO_ROOT / "configs")
    built: list[int] = []
    assert s.derived("k", lambda x: built.append(1) or len(built)) == 1
    assert s.derived("k", lambda x: built.append(1) or len(built)) == 1 and built == [1]
    assert fit_rules(s) is fit_rules(s) and plan(s) is plan(s) and static(s) is static(s)
    fewer = s.model_copy(update={"features": s.features.model_copy(update={"windows_days": [7]})})
    assert plan(fewer) is not plan(s) and len(plan(fewer).schema) < len(plan(s).schema)
    assert copy.copy(s).derived("k", lambda x: 2) == 2
    clone = pickle.loads(pickle.dumps(s))
    assert clone == s and clone.derived("k", lambda x: 3) == 3
    assert s == load_settings(REPO_ROOT / "configs")  # the memo is not part of equality


def test_bad_title_regex_is_a_config_error() -> None:
    from leadscore.features.fit import fit_rules

    s = load_settings(REPO_ROOT / "configs")
    bad = s.model_copy(update={"titles": s.titles.model_copy(
        update={"seniority": [s.titles.seniority[0].model_copy(update={"pattern": "(unclosed"})]})})
    with pytest.raises(ConfigError, match="titles: invalid regular expression"):
        fit_rules(bad)
