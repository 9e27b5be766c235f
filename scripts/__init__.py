"""Tools that measure bertlite and report on it. Run each from the repository root as a module, for example
``python -m scripts.benchmark`` or ``python -m scripts.unigram_baseline``: as a package, the benchmark's modules
import one another by relative imports, with no path set up by hand."""
