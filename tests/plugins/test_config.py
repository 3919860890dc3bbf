"""Configuration: one TOML file plus AIOS_* variables, validated, with errors that name the offending key."""

from __future__ import annotations

import os

import pytest

from aios_core.cli import main as aios_main
from aios_core.config import load_config
from aios_core.errors import ConfigError, UnknownComponentError
from aios_core.kernel import Kernel


@pytest.fixture(autouse=True)
def clean_environment(tmp_path, monkeypatch):
    """No AIOS_* variables from the caller, and no ./aios.toml: each test states its own configuration."""
    for name in list(os.environ):
        if name.startswith("AIOS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(tmp_path, text: str):
    path = tmp_path / "aios.toml"
    path.write_text(text)
    return path


def test_a_valid_file_and_the_defaults(tmp_path):
    config = load_config(
        write(tmp_path, 'scheduler = "rr"\nscheduler_options = { quantum = 16 }\n[[cores]]\nkind = "sim"\nmax_batch = 4\n')
    )
    assert config.scheduler == "rr" and config.scheduler_options == {"quantum": 16}
    assert config.cores[0].kind == "sim" and config.cores[0].name == "sim" and config.cores[0].options() == {"max_batch": 4}
    assert config.max_queued == 100_000 and config.preemption is True


def test_an_unknown_key_in_the_file_is_named(tmp_path):
    path = write(tmp_path, 'schedular = "rr"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "schedular: Extra inputs are not permitted" in info.value.message
    assert str(path) in info.value.message


def test_a_bad_value_in_the_file_is_named_with_its_path(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "max_queued = 0\n[[cores]]\nname = 'no-kind'\n"))
    assert sorted(info.value.details["errors"]) == ["cores.0.kind: Field required", "max_queued: Input should be greater than 0"]


def test_two_cores_with_one_name_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="cores: Value error, two cores are named 'a'"):
        load_config(write(tmp_path, "[[cores]]\nkind = 'sim'\nname = 'a'\n[[cores]]\nkind = 'sim'\nname = 'a'\n"))


def test_a_toml_syntax_error_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="invalid configuration"):
        load_config(write(tmp_path, "scheduler = \n"))


def test_a_bad_environment_value_is_named(monkeypatch):
    monkeypatch.setenv("AIOS_MAX_QUEUED", "lots")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "max_queued: Input should be a valid integer" in info.value.message
    assert "AIOS_* variables" in info.value.message


def test_bad_json_in_a_structured_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("AIOS_SCHEDULER_OPTIONS", "{quantum: 16")
    with pytest.raises(ConfigError, match="scheduler_options"):
        load_config()


def test_environment_overrides_the_file_and_keywords_override_both(tmp_path, monkeypatch):
    path = write(tmp_path, 'scheduler = "fifo"\nmax_retries = 3\n')
    monkeypatch.setenv("AIOS_SCHEDULER", "rr")
    monkeypatch.setenv("AIOS_SCHEDULER_OPTIONS", '{"quantum": 8}')
    monkeypatch.setenv("AIOS_CORES", '[{"kind": "sim", "max_batch": 2}]')
    config = load_config(path, max_retries=0)
    assert (config.scheduler, config.scheduler_options, config.max_retries) == ("rr", {"quantum": 8}, 0)
    assert config.cores[0].kind == "sim" and config.cores[0].options() == {"max_batch": 2}


def test_the_local_aios_toml_is_read_and_aios_config_must_exist(tmp_path, monkeypatch):
    write(tmp_path, 'scheduler = "priority"\n')
    assert load_config().scheduler == "priority"
    monkeypatch.setenv("AIOS_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml, which is not a file"):
        load_config()


def test_a_typo_in_a_manager_table_fails_at_start_with_the_key(tmp_path):
    config = load_config(
        write(tmp_path, f"data_dir = '{tmp_path / 'data'}'\n[[cores]]\nkind = 'sim'\n[managers.tools]\nshel_enabled = true\n")
    )
    kernel = Kernel(config)
    with pytest.raises(ConfigError, match="managers.tools.shel_enabled: Extra inputs are not permitted"):
        kernel.start()
    assert not kernel.running


def test_a_typo_in_a_core_table_fails_at_start_with_the_core(tmp_path):
    config = load_config(write(tmp_path, f"data_dir = '{tmp_path / 'data'}'\n[[cores]]\nkind = 'sim'\nmax_bach = 4\n"))
    with pytest.raises(ConfigError, match="cores.sim: bad options for core kind 'sim'.*max_bach"):
        Kernel(config).start()


def test_an_unknown_scheduler_lists_the_known_ones(tmp_path):
    config = load_config(write(tmp_path, f"scheduler = 'lottery'\ndata_dir = '{tmp_path / 'data'}'\n[[cores]]\nkind = 'sim'\n"))
    with pytest.raises(UnknownComponentError, match="no scheduler named 'lottery'; known: fifo, plas, priority, rr"):
        Kernel(config, entry_point_plugins=False).start()


def test_aios_config_prints_the_error_and_fails(tmp_path, capsys):
    path = write(tmp_path, "[[cores]]\nkind = 'sim'\nmax_batch = 2\npreemption = 'sometimes'\n")
    assert aios_main(["config", "--config", str(path)]) == 0, "an unknown key inside a core table goes to the core"
    bad = write(tmp_path, "preemption = 'sometimes'\n")
    assert aios_main(["config", "--config", str(bad)]) == 1
    assert "preemption: Input should be a valid boolean" in capsys.readouterr().out
