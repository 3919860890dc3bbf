"""Benchmarks: scheduler studies, kernel overhead, cores, managers, server load and agent task suites."""
