"""Where trained models go: next to a file storage, a configured directory, or nowhere."""

from __future__ import annotations

from pathlib import Path

from studyhall.objectives._artifacts import artifact_dir, save_trial_model, trial_artifacts
from studyhall.reports.dashboard import _artifact_store
from studyhall.storage import parse_url


def test_a_file_storage_keeps_its_models_beside_it(tmp_path):
    url = parse_url(f"sqlite:///{tmp_path}/runs.db")
    assert artifact_dir(url) == tmp_path / "runs.db.artifacts"
    assert artifact_dir(parse_url(f"journal://{tmp_path}/s.log")) == tmp_path / "s.log.artifacts"


def test_a_configured_directory_wins_and_a_server_has_a_default(tmp_path, monkeypatch):
    url = parse_url("postgresql://me:secret@db.example:5432/studies")
    assert artifact_dir(url, str(tmp_path / "models")) == tmp_path / "models"
    monkeypatch.delenv("STUDYHALL_ARTIFACTS", raising=False)
    assert artifact_dir(url) == Path.cwd() / "studyhall-artifacts"
    monkeypatch.setenv("STUDYHALL_ARTIFACTS", str(tmp_path / "shared"))
    assert artifact_dir(url) == tmp_path / "shared"


def test_an_in_memory_database_keeps_no_models():
    assert artifact_dir(parse_url("sqlite:///:memory:")) is None


def test_outside_a_worker_or_with_save_models_none_nothing_is_saved(tmp_path):
    # No Keras needed: the model is never touched when nothing is to be saved.
    assert save_trial_model(object(), object(), 0.9, True) is None
    with trial_artifacts(parse_url(f"sqlite:///{tmp_path}/r.db"), {"save_models": "none"}):
        assert save_trial_model(object(), object(), 0.9, True) is None
    assert not (tmp_path / "r.db.artifacts").exists()


def test_the_dashboard_gets_the_artifact_store_when_models_were_saved(tmp_path):
    url = parse_url(f"sqlite:///{tmp_path}/runs.db")
    assert _artifact_store(url, None) is None  # nothing saved yet: the tab stays off
    (tmp_path / "runs.db.artifacts").mkdir()
    store = _artifact_store(url, None)
    assert type(store).__name__ == "FileSystemArtifactStore"
    assert Path(store._base_path) == tmp_path / "runs.db.artifacts"
