"""The `cmx` command line: option groups (:mod:`~cmx_cli.cli.options`), the commands, and
what they print (:mod:`~cmx_cli.cli.render`). ``cmx = cmx_cli.cli:main``."""
from cmx_cli.cli import commands, training_commands  # noqa: F401 - they register the commands
from cmx_cli.cli.main import cli, main

__all__ = ["cli", "main"]
