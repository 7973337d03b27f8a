"""``python -m libtagger``: the same as the ``libtagger`` command."""

from libtagger.cli import main

main()
