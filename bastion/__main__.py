"""`python -m bastion` runs the same CLI as the `bastion` console script."""

from bastion.cli import main

raise SystemExit(main())
