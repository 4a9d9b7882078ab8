"""``mmfast`` entry point: parses the command line and runs a sub-command, turning the library's
argument errors into a one-line message and exit code 2 instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mmfast.cli.parser import build_parser

USAGE_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``mmfast`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, ImportError, FileNotFoundError) as error:
        message = " ".join(str(error).split())
        print(f"mmfast {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"mmfast {args.command}: interrupted", file=sys.stderr)
        return 130
