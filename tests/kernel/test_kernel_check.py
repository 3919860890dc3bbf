"""A core or scheduler option the kernel refuses is a ConfigError, found by ``Kernel.check`` / ``aios serve --check`` before anything loads."""

from __future__ import annotations

import pytest

from aios_core.cli import main as cli_main
from aios_core.config import load_config
from aios_core.errors import ConfigError
from aios_core.kernel import Kernel, KernelState


def _kernel(tmp_path, *, core=None, **options):
    config = load_config(data_dir=tmp_path, entry_point_plugins=False, cores=[core or {"kind": "sim", "t0": 0.0001}], **options)
    return Kernel(config)


def test_check_refuses_a_scheduler_value_the_policy_rejects(tmp_path):
    kernel = _kernel(tmp_path, scheduler="plas", scheduler_options={"rank": "bogus"})
    with pytest.raises(ConfigError, match="scheduler_options: bad options for scheduler 'plas': rank must be one of"):
        kernel.check()
    assert kernel.cores == {} and kernel.pools == {}  # nothing was started to find it


def test_check_refuses_a_core_value_the_core_rejects(tmp_path):
    kernel = _kernel(tmp_path, core={"kind": "sim", "name": "fast", "t0": -1})
    with pytest.raises(ConfigError, match=r"cores\.fast: bad options for core kind 'sim': sim cost t0 must be a number >= 0"):
        kernel.check()


def test_check_passes_a_good_configuration_without_starting_it(tmp_path):
    kernel = _kernel(tmp_path, scheduler="plas", scheduler_options={"levels": 2, "rank": "gittins"})
    kernel.check()
    assert kernel.cores == {} and not kernel.running


async def test_start_reports_a_refused_scheduler_value_as_a_config_error_and_stops(tmp_path):
    """Not a bare ValueError from inside the policy: callers (and ``aios serve``) handle ConfigError."""
    kernel = _kernel(tmp_path, scheduler="rr", scheduler_options={"quantum": 0})
    with pytest.raises(ConfigError, match="quantum must be at least 1"):
        await kernel.astart()
    assert kernel._state is KernelState.STOPPED and not kernel.running


def _toml(tmp_path, text: str):
    path = tmp_path / "aios.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\nentry_point_plugins = false\n' + text + '[[cores]]\nkind = "sim"\n')
    return str(path)


def test_serve_check_exits_1_naming_the_refused_option(tmp_path, capsys):
    path = _toml(tmp_path, 'scheduler = "plas"\nscheduler_options = {"rank" = "bogus"}\n')
    assert cli_main(["serve", "--config", path, "--check"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "error:" in out and "rank must be one of levels, gittins" in out


def test_serve_check_says_ok_and_serves_nothing(tmp_path, capsys):
    path = _toml(tmp_path, 'scheduler = "plas"\nscheduler_options = {"levels" = 2}\n')
    assert cli_main(["serve", "--config", path, "--check", "--port", "1"]) == 0  # port 1 would fail to bind if it served
    assert "configuration ok: cores sim, scheduler plas" in " ".join(capsys.readouterr().out.split())
