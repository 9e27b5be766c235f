"""The documentation's commands are ones the CLI accepts, its links lead somewhere, and the README stays short.

Every bertlite command in a ```bash block of README.md or docs/*.md is composed by its entry point's own Hydra
config in ``--cfg job`` form, in-process (a subprocess would cost seconds of imports per command). ``--cfg job``
prints the composed config without running the job, so no data, checkpoint or network is touched (and
tests/conftest.py sets HF_DATASETS_OFFLINE=1 and HF_HUB_OFFLINE=1 for every test).
"""

from __future__ import annotations

import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# bertlite/cli/<name>.py
HYDRA_PROGRAMS = ("pretrain", "finetune", "predict", "generate", "attention", "compare", "glue")


def bash_lines(page: Path):
    """Logical lines of the page's ```bash blocks: `# comments` dropped, `\\`-continued lines joined, and each
    placeholder (`<run>`, `<any ckpt>`) filled in with a word, as the reader does."""
    for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(), flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                yield shlex.split(re.sub(r"<(\S|\S[^<>]*\S)>", "x", line), comments=True)
            except ValueError:  # a line shlex cannot read is no command of ours
                continue


def commands():
    """(page, program, arguments) for each documented bertlite command. `a && b` chains are split and the bertlite
    parts kept; launchers (torchrun, srun) are stripped: what follows them is the command each process runs.
    `python -m bertlite.<x>` is the module form of `bertlite-<x>` (bertlite/<x>.py imports bertlite.cli.<x>.main).
    Shell variables (`hydra.run.dir=$RUN` in the SLURM script) reach Hydra as plain strings, which it accepts."""
    found = []
    for page in PAGES:
        for words in bash_lines(page):
            parts = [[]]
            for word in words:
                parts.append([]) if word == "&&" else parts[-1].append(word)
            for part in parts:
                for i, word in enumerate(part):
                    name = Path(word).name  # .venv/bin/bertlite-pretrain
                    if name.startswith("bertlite-"):
                        found.append((page.name, name.removeprefix("bertlite-"), part[i + 1:]))
                        break
                    if word == "-m" and i + 1 < len(part) and part[i + 1].startswith("bertlite."):
                        found.append((page.name, part[i + 1].removeprefix("bertlite."), part[i + 2:]))
                        break
    return found


COMMANDS = commands()
HYDRA = [c for c in COMMANDS if c[1] in HYDRA_PROGRAMS]
CONVERT = [c for c in COMMANDS if c[1] == "convert"]


def case_id(command) -> str:
    page, program, args = command
    return f"{page}:{program} {' '.join(args)}"[:120]


@pytest.mark.parametrize("command", HYDRA, ids=[case_id(c) for c in HYDRA])
def test_documented_command_composes(command, monkeypatch, capsys):
    from hydra.core.global_hydra import GlobalHydra

    _, program, args = command
    main = importlib.import_module(f"bertlite.cli.{program}").main
    help_only = "--help" in args  # --help prints the config groups, not a config
    args = [a for a in args if a not in ("-m", "--multirun")]  # Hydra takes --cfg or -m, not both
    monkeypatch.setattr(sys, "argv", [f"bertlite-{program}", *args, *([] if help_only else ["--cfg", "job"])])
    GlobalHydra.instance().clear()
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err[-2000:]
    out = capsys.readouterr().out
    assert re.search(r"^[\w/]+:", out, flags=re.M), out[-2000:]  # YAML: top-level keys (or --help's groups)


def test_documented_commands_were_found():
    """The parser finds the documented commands, and none names a program that does not exist."""
    assert {c[1] for c in COMMANDS} == {*HYDRA_PROGRAMS, "convert"}, sorted({c[1] for c in COMMANDS})
    assert len(HYDRA) >= 40 and len(CONVERT) >= 5


@pytest.mark.parametrize("command", CONVERT, ids=[case_id(c) for c in CONVERT])
def test_documented_convert_command_parses(command):
    """Every word of the documented command reaches the parsed arguments; from-hf writes one checkpoint file."""
    from bertlite.cli.convert import parse

    argv = command[2]
    args = parse(argv)
    options = dict(option.split("=", 1) for option in argv[2:])
    assert (args.direction, args.source, args.out) == (argv[0], argv[1], Path(options["out"]))
    assert args.direction != "from-hf" or args.out.suffix == ".ckpt", args.out


def test_relative_links_lead_to_files():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#")[0]
            if path and not re.match(r"[a-z]+:", path) and not (page.parent / path).exists():
                broken.append(f"{page.name}: {target}")
    assert not broken


def test_readme_is_short():
    assert (REPO / "README.md").stat().st_size <= 12_500
