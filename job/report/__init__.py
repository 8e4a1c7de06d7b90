"""The atlas page (``report.html``) and the maps redrawn from a finished run, without a refit."""
