"""Shared fixtures: a kernel on the sim core, isolated data directories, no third-party plugins."""

from __future__ import annotations

import pytest

from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "aios-data"


@pytest.fixture
def make_kernel(data_dir):
    """Build a kernel on fast sim cores; options override config keys."""

    def build(*, cores=None, scheduler="fifo", **options):
        cores = cores if cores is not None else [SimCore(t0=0.0005, a=0.0, b=0.0)]
        return Kernel(cores=cores, scheduler=scheduler, data_dir=data_dir, entry_point_plugins=False, **options)

    return build
