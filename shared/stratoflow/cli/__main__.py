"""`python -m stratoflow.cli …`: the `stratoflow` command from a checkout, uninstalled."""

from stratoflow.cli import main

main()
