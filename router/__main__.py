"""``python -m router``: the command line (``router.cli.main``); ``serve --processes`` re-executes
this module for its children."""

from router.cli import main

raise SystemExit(main())
