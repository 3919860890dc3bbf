"""aios-stride: an example third-party AIOS plugin contributing a scheduling policy."""

from aios_stride.scheduler import StrideScheduler

__all__ = ["StrideScheduler"]
__version__ = "0.1.0"
