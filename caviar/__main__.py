"""`python -m caviar ...` is `caviar ...`; cluster jobs use it so the uploaded code is what runs."""

from caviar.cli.main import entry

entry()
