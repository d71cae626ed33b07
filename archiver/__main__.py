"""`python -m archiver`: the same as the `archiver` command."""

from archiver.entry import main

raise SystemExit(main())
