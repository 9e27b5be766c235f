"""python -m bertlite.predict: the module form of bertlite-predict."""

from bertlite.cli.predict import main

if __name__ == "__main__":
    main()
