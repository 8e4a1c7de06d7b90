"""``python -m job`` runs the faceatlas CLI."""

from job.cli import main

main()
