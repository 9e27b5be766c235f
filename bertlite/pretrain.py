"""python -m bertlite.pretrain: the module form of bertlite-pretrain."""

from bertlite.cli.pretrain import main

if __name__ == "__main__":
    main()
