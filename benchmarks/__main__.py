"""``python -m benchmarks``: run every benchmark (see :mod:`benchmarks.run_all`)."""

from benchmarks.run_all import main

if __name__ == "__main__":
    main()
