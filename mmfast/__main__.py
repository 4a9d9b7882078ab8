"""``python -m mmfast``: the ``mmfast`` command line."""

from mmfast.cli import main

raise SystemExit(main())
