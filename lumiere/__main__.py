"""`python -m lumiere COMMAND ...` (see lumiere/cli.py)."""
from .cli import main

raise SystemExit(main())
