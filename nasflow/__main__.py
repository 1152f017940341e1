"""``python -m nasflow``: the same as the ``nasflow`` console script (handy inside a venv)."""

from nasflow.cli import main

raise SystemExit(main())
