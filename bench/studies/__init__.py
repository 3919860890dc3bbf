"""Studies of one part of the system: schedulers, cores, kernel overhead, managers, server load, calibration."""
