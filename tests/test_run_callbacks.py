"""The checkpoint callback keeps only its own files from a resumed checkpoint; the progress bar of a run counted in
steps shows no epoch total."""

from __future__ import annotations

from types import SimpleNamespace

from bertlite.tasks.callbacks import RunCheckpoint, StepsProgressBar


def restored_state(dirpath, best, kth, last, top_k):
    return {"dirpath": str(dirpath), "best_model_score": 0.9, "best_model_path": str(best),
            "kth_best_model_path": str(kth), "kth_value": 0.5, "last_model_path": str(last),
            "best_k_models": {str(p): 0.9 for p in top_k}, "monitor": "val/acc"}


def test_restored_paths_outside_the_checkpoint_folder_are_dropped(tmp_path, caplog):
    own, elsewhere = tmp_path / "run" / "checkpoints", tmp_path / "users_files"
    own.mkdir(parents=True)
    elsewhere.mkdir()
    victim = elsewhere / "thesis.ckpt"
    victim.write_bytes(b"not yours")
    callback = RunCheckpoint(dirpath=own, monitor="val/acc", mode="max")
    callback.load_state_dict(restored_state(own, best=victim, kth="s3://bucket/model.ckpt", last=own / "last.ckpt",
                                            top_k=[victim, own / "best.ckpt", "s3://bucket/model.ckpt"]))

    assert callback.best_model_path == "" and callback.best_model_score is None
    assert callback.kth_best_model_path == ""
    assert callback.last_model_path == str(own / "last.ckpt")
    assert list(callback.best_k_models) == [str(own / "best.ckpt")]
    assert "not a file in this run's checkpoint folder" in caplog.text
    assert victim.read_bytes() == b"not yours"


def test_the_state_key_is_lightnings_so_older_checkpoints_resume_with_their_callback_state(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    options = dict(dirpath=tmp_path, monitor="val/acc", mode="max")
    assert RunCheckpoint(**options).state_key == ModelCheckpoint(**options).state_key


def test_restored_paths_inside_the_checkpoint_folder_are_kept(tmp_path):
    own = tmp_path / "checkpoints"
    own.mkdir()
    callback = RunCheckpoint(dirpath=own, monitor="val/acc", mode="max")
    callback.load_state_dict(restored_state(own, best=own / "best.ckpt", kth=own / "best.ckpt",
                                            last=own / "last.ckpt", top_k=[own / "best.ckpt"]))
    assert callback.best_model_path == str(own / "best.ckpt") and callback.best_model_score == 0.9
    assert list(callback.best_k_models) == [str(own / "best.ckpt")]


def test_a_run_counted_in_steps_shows_no_epoch_total():
    bar = StepsProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(3).strip() == "Epoch 3"
    bar._trainer = SimpleNamespace(max_epochs=5)
    assert bar._get_train_description(3).strip() == "Epoch 3/4"
