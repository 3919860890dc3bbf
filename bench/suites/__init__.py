"""Task suites with and without AIOS: the same agents on HumanEval, MINT, GAIA and SWE-Bench-Lite."""
