"""``python -m meshnode.cli``: the ``meshnode`` command, for an environment without
its console script."""

from meshnode.cli.dispatch import main

if __name__ == "__main__":
    main()
