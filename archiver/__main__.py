"""`python -m archiver`: the same as the `archiver` command."""

from archiver.cli import main

main()
