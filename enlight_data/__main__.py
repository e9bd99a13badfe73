"""Command line: ``python -m enlight_data demo`` (also ``enlight-data demo``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``enlight-data <command> [options]``."""
    # The console script is enlight-data; run as a module, argv[0] is this file's path.
    prog = "python -m enlight_data" if sys.argv[0].endswith("__main__.py") else "enlight-data"
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description="enlightenment-period data scheduling")
    parser.add_argument("command", choices=["demo"], help="demo: train a small CNN on digits three ways")
    parser.add_argument("options", nargs=argparse.REMAINDER, help=f"the command's options ({prog} demo --help)")
    if not argv:
        parser.error("a command is required: demo")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(args.options, prog=f"{prog} demo")
    return 2  # pragma: no cover  (argparse rejects other commands)


if __name__ == "__main__":
    sys.exit(main())
