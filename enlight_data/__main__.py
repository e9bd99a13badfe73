"""Command line: ``python -m enlight_data demo`` (also ``enlight-data demo``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``enlight-data <command> [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="enlight-data", description="enlightenment-period data scheduling")
    parser.add_argument("command", choices=["demo"], help="demo: train a small CNN on digits three ways")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the command's options (enlight-data demo --help)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(args.options)
    return 2  # pragma: no cover  (argparse rejects other commands)


if __name__ == "__main__":
    sys.exit(main())
