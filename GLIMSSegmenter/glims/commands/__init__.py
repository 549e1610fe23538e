"""Subcommands of the ``glims`` CLI, one module each (see ``glims.cli``)."""
