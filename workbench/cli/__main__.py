"""`python -m workbench.cli ...`, as the app's background launches call it."""

from workbench.cli import main

main()
