"""python -m bertlite.finetune: the module form of bertlite-finetune."""

from bertlite.cli.finetune import main

if __name__ == "__main__":
    main()
