"""Benchmarks of deepmetric against naive / reference baselines measured in the same run.

Run ``python -m benchmarks.run [--only NAME] [--quick] [--out PATH]`` (or ``make bench``);
see ``benchmarks/README.md``. Nothing here is imported by the library.
"""
