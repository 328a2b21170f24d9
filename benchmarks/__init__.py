"""Benchmarks of sktransfer: ``python -m benchmarks`` (see ``benchmarks.report``)."""
