"""overwrite=true replaces only what bertlite wrote: an empty folder, a model folder, an export. It never
deletes the current directory, the checkpoint being converted or anyone's other files, and the swap is atomic."""

from __future__ import annotations

import json
import os

import pytest
import torch

from bertlite.atomic import write_folder_atomically
from bertlite.checkpoints import save_checkpoint
from bertlite.cli import convert
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import ConfigError
from bertlite.models import preset
from bertlite.models.registry import build_classifier
from bertlite.sources import read_checkpoint
from tests.conftest import predictor_checkpoint, synthetic_sentences

TINY = dict(d_model=32, n_heads=2, d_ff=64, n_layers=2, max_seq_len=32, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(synthetic_sentences(200), vocab_size=120)


@pytest.fixture
def run_dir(tokenizer, tmp_path, monkeypatch):
    """A run directory, the current directory, holding checkpoints/last.ckpt and the user's notes.txt."""
    torch.manual_seed(0)
    model = build_classifier(preset("bert-tiny", vocab_size=tokenizer.get_vocab_size(), **TINY), 2)
    checkpoint = predictor_checkpoint(model, tokenizer, "classification", label_names=["neg", "pos"],
                                      pooling="cls", max_seq_len=32)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(checkpoint, run / "checkpoints" / "last.ckpt")
    (run / "notes.txt").write_text("my experiment notes\n")
    monkeypatch.chdir(run)
    return run


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(argv: list[str], capsys) -> str:
    """Run bertlite-convert, expecting exit status 2 and one error line; that line."""
    with pytest.raises(SystemExit) as exit_info:
        convert.run(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("direction", ["to-folder", "to-hf"])
@pytest.mark.parametrize("out", [".", "checkpoints", ".."])
def test_overwrite_refuses_the_current_directory_and_the_checkpoints_folder(direction, out, run_dir, capsys):
    before = snapshot(run_dir.parent)
    message = refused([direction, "checkpoints/last.ckpt", f"out={out}", "overwrite=true"], capsys)
    assert "refusing to write the folder" in message
    assert snapshot(run_dir.parent) == before


@pytest.mark.parametrize("direction", ["to-folder", "to-hf"])
def test_overwrite_refuses_a_folder_holding_other_files(direction, run_dir, capsys):
    other = run_dir / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    before = snapshot(run_dir)
    message = refused([direction, "checkpoints/last.ckpt", "out=other", "overwrite=true"], capsys)
    expected = "not a bertlite model folder" if direction == "to-folder" else "holds notes.txt, which bertlite does"
    assert expected in message
    assert snapshot(run_dir) == before


def test_overwrite_refuses_a_model_folder_with_something_else_in_it(run_dir, capsys):
    convert.run(["to-folder", "checkpoints/last.ckpt", "out=model"])
    (run_dir / "model" / "README.md").write_text("my model card\n")
    before = snapshot(run_dir)
    assert "holds README.md" in refused(["to-folder", "checkpoints/last.ckpt", "out=model", "overwrite=true"], capsys)
    assert snapshot(run_dir) == before


def test_overwrite_refuses_a_folder_that_only_looks_like_a_model_folder(run_dir, capsys):
    foreign = run_dir / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "bert"}))
    before = snapshot(run_dir)
    message = refused(["to-folder", "checkpoints/last.ckpt", "out=foreign", "overwrite=true"], capsys)
    assert "not a bertlite model folder" in message
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("direction", ["to-folder", "to-hf"])
def test_overwrite_replaces_a_folder_bertlite_wrote(direction, run_dir, capsys):
    out = run_dir / "exported"
    convert.run([direction, "checkpoints/last.ckpt", f"out={out}"])
    (out / "config.json").write_text("{}")  # an older or edited version of the folder
    if direction == "to-folder":
        (out / "config.json").write_text(json.dumps({"format": "bertlite-model-folder"}))
    convert.run([direction, "checkpoints/last.ckpt", f"out={out}", "overwrite=true"])
    config = json.loads((out / "config.json").read_text())
    assert config.get("format") == "bertlite-model-folder" if direction == "to-folder" else "architectures" in config
    if direction == "to-folder":
        assert read_checkpoint(out)["bertlite"]["label_names"] == ["neg", "pos"]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # nothing staged or set aside is left
    assert (run_dir / "notes.txt").read_text() == "my experiment notes\n"


def test_overwrite_refuses_a_file(tmp_path):
    target = tmp_path / "model"
    target.write_text("a file, not a folder\n")
    with pytest.raises(ConfigError, match="a file of that name exists"):
        write_folder_atomically(target, lambda folder: (folder / "config.json").write_text("{}"), overwrite=True)
    assert target.read_text() == "a file, not a folder\n"


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    """The old folder is renamed aside, the new one renamed in, and the old one deleted only after: a failure
    of the second rename leaves the old folder where it was."""
    out = tmp_path / "folder"
    write_folder_atomically(out, lambda folder: (folder / "config.json").write_text("old"))
    renames, real_rename = [], os.rename

    def failing_second_rename(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        if len(renames) == 2:
            raise OSError("simulated crash between the renames")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_second_rename)
    with pytest.raises(OSError, match="simulated crash"):
        write_folder_atomically(out, lambda folder: (folder / "config.json").write_text("new"), overwrite=True)
    assert renames[0][0] == "folder" and renames[0][1].startswith(".folder.old.")
    assert renames[1][0].startswith(".folder.new.") and renames[1][1] == "folder"
    assert (out / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_from_hf_refuses_a_folder_as_its_output_file(run_dir, capsys):
    before = snapshot(run_dir)
    message = refused(["from-hf", "some-hf-folder", "out=.", "overwrite=true"], capsys)
    assert "from-hf writes one checkpoint file" in message
    assert snapshot(run_dir) == before
