"""``python -m benchmarks``: run the benchmarks and print the table."""

from .report import main

main()
