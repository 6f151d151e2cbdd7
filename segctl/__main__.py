"""``python -m segctl``."""

from segctl.cli import main

main()
