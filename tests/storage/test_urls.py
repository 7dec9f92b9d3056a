from __future__ import annotations

import pytest

from studyhall import StorageError
from studyhall.storage import DEFAULT_STORAGE, mask_url, parse_url


@pytest.mark.parametrize(
    "given,expected,backend",
    [
        (None, "sqlite:///studyhall.db", "sqlite"),
        ("runs.db", "sqlite:///runs.db", "sqlite"),
        ("sqlite:///:memory:", "sqlite:///:memory:", "sqlite"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db", "postgresql"),
        ("postgres://u@h:5432/db", "postgresql+psycopg://u@h:5432/db", "postgresql"),
        ("mysql://root@127.0.0.1/test", "mysql+pymysql://root@127.0.0.1/test", "mysql"),
        ("mariadb://root@127.0.0.1/test", "mysql+pymysql://root@127.0.0.1/test", "mysql"),
    ],
)
def test_urls_are_normalised_to_the_installed_drivers(given, expected, backend):
    url = parse_url(given)
    assert (url.url, url.backend) == (expected, backend)


def test_the_default_is_a_sqlite_file_in_the_working_directory():
    assert parse_url(None).path == "studyhall.db"
    assert DEFAULT_STORAGE == "sqlite:///studyhall.db"


def test_a_password_is_masked():
    assert mask_url("postgresql://me:s3cret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert "s3cret" not in str(parse_url("mysql://me:s3cret@db/x"))
    assert mask_url("sqlite:///a.db") == "sqlite:///a.db"


@pytest.mark.parametrize(
    "url,message",
    [
        ("redis2://x", "scheme 'redis2' from the storage URL is not supported"),
        ("nonsense", "has no scheme"),
        ("", "must be a non-empty string"),
        ("postgresql:///db", "names no host"),
        ("sqlite:////definitely/not/here/x.db",
         "directory that does not exist (/definitely/not/here)"),
    ],
)
def test_a_bad_url_is_refused_before_connecting(url, message):
    with pytest.raises(StorageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_url(url)


def test_an_error_never_shows_the_password():
    with pytest.raises(StorageError) as info:
        parse_url("mongodb://me:hunter2@db/x")
    assert "hunter2" not in str(info.value)
