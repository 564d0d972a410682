"""The symbolic-link policy of data folders: links inside are skipped, never followed."""
import os
import warnings

import pytest

from sparse_transformer.data.audio import audio_splits
from sparse_transformer.data.files import data_files
from sparse_transformer.data.text import file_splits


@pytest.fixture
def folder(tmp_path):
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_bytes(b"SECRET" * 1000)
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for i in range(30):
        (data / "sub" / f"doc{i}.txt").write_bytes(b"plain text %d " % i * 200)
    (data / "link_to_file.txt").symlink_to(secret / "secret.txt")
    (data / "link_to_dir").symlink_to(secret)
    (data / "inner_link.txt").symlink_to(data / "sub" / "doc0.txt")  # even one that stays inside
    os.mkfifo(data / "pipe")  # would block a reader forever
    return data


def test_links_and_special_files_are_skipped_with_a_warning(folder):
    with pytest.warns(UserWarning, match="skipped 3 symbolic link"):
        files = data_files(folder)
    assert [p.name for p in files] == sorted(f"doc{i}.txt" for i in range(30))


def test_text_folder_never_reads_through_a_link(folder):
    with pytest.warns(UserWarning, match="never followed"):
        splits = file_splits(folder)
    assert all(b"SECRET" not in bytes(v) for v in splits.values())


def test_the_named_folder_itself_may_be_a_link(folder, tmp_path):
    named = tmp_path / "named"
    named.symlink_to(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(data_files(named)) == 30


def test_audio_folder_skips_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.wav").write_bytes(b"RIFF")
    data = tmp_path / "audio"
    data.mkdir()
    (data / "x.wav").symlink_to(outside / "x.wav")
    with pytest.warns(UserWarning, match="symbolic link"), pytest.raises(Exception, match="holds no"):
        audio_splits(data, 8000, 16)
