"""``python -m rqcluster`` is the ``rqcluster`` command."""

from rqcluster.cli import main

main()
