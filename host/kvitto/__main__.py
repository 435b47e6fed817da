"""`python -m kvitto` is the `kvitto` command."""

from kvitto.cli import main

main()
