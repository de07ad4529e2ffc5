"""``python -m peergrid`` is the ``peergrid`` command."""

from peergrid.cli import main

if __name__ == "__main__":
    main()
