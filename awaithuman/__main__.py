"""``python -m awaithuman``: the ``awaithuman`` command (awaithuman/cli.py)."""

from awaithuman.cli import main

main()
