"""python -m bertlite.generate: the module form of bertlite-generate."""

from bertlite.cli.generate import main

if __name__ == "__main__":
    main()
