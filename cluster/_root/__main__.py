"""``python -m prunesearch`` is the same CLI as the ``prunesearch`` console script."""

from prunesearch.cluster.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
