"""A bundle archive fuzzed (issue 23 item 3): whatever bytes the page's upload or a push sends,
playbach/bundle_store.py installs one playable bundle folder in the user folder or refuses with a
bundle_store.Refused (a 4xx with the reason), never another exception, and writes nothing
anywhere else, nor anything at all when it refuses. Three sources: any bytes, a good archive with
bytes of its tar changed, and archives built from entries of any name and type."""
from __future__ import annotations

import atexit
import gzip
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from archives import MODEL, entry, everything_in, folder_entries, small_bundle, tar_gz
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from playbach import bundle_store
from playbach.bundle import load_bundle

FUZZ = settings(max_examples=120, deadline=5000, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
GOOD = tempfile.mkdtemp(prefix="playbach-fuzz-archive-")
atexit.register(shutil.rmtree, GOOD, True)
SOURCE = small_bundle(Path(GOOD) / "mine", b"m" * 600)
GOOD_TAR = gzip.decompress(tar_gz(folder_entries(SOURCE)))
HEADERS = [m.offset for m in tarfile.open(fileobj=io.BytesIO(GOOD_TAR))]   # where each entry's header is


def with_checksums(raw: bytearray) -> bytearray:
    """The headers' checksums made right again, so a changed header is read, not refused for its sum."""
    for at in HEADERS:
        raw[at + 148:at + 156] = b" " * 8
        raw[at + 148:at + 156] = b"%06o\0 " % sum(raw[at:at + 512])
    return raw


def install_or_refuse(tmp_path: Path, data: bytes) -> str | None:
    """The installed name, or None after a Refused; checks what was left in and around the folder."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    shipped, user, archive = work / "shipped", work / "state" / "models", work / "upload.tar.gz"
    shipped.mkdir()
    archive.write_bytes(data)
    try:
        with bundle_store.staging(user) as tmp:
            name = bundle_store.install(archive, tmp, shipped, user)
    except bundle_store.Refused as e:
        assert 400 <= e.status < 600 and str(e)
        assert everything_in(work) == ["shipped", "state", "state/models", "upload.tar.gz"], everything_in(work)
        return None
    load_bundle(user / name)
    assert everything_in(work)[:4] == ["shipped", "state", "state/models", f"state/models/{name}"]
    assert all(p.startswith(f"state/models/{name}/") for p in everything_in(work)[4:-1])
    return name


@FUZZ
@given(data=st.binary(max_size=3000) | st.binary(max_size=3000).map(gzip.compress))
@example(data=b"\x1f\x8b")
@example(data=gzip.compress(b"\0" * 10240))
def test_any_bytes_are_installed_or_refused(tmp_path, data):
    install_or_refuse(tmp_path, data)


@FUZZ
@given(changes=st.lists(st.tuples(st.integers(0, len(GOOD_TAR) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.none() | st.integers(0, len(GOOD_TAR)), fix=st.booleans())
@example(changes=[(HEADERS[1] + 156, ord("2"))], cut=None, fix=True)   # bundle.json made a symbolic link
@example(changes=[(HEADERS[2] + 156, ord("1"))], cut=None, fix=True)   # the model made a hard link
@example(changes=[(0, ord("."))], cut=None, fix=True)                  # the folder renamed '.ine'
@example(changes=[(HEADERS[2] + 124, ord("7"))], cut=None, fix=True)   # the model's size made huge
def test_a_good_archive_with_bytes_changed_is_installed_or_refused(tmp_path, changes, cut, fix):
    raw = bytearray(GOOD_TAR)
    for at, value in changes:
        raw[at] = value
    install_or_refuse(tmp_path, gzip.compress(bytes((with_checksums(raw) if fix else raw)[:cut])))


PARTS = st.sampled_from(["mine", "mine", "other", "..", ".", "", "bundle.json", MODEL, "a\\b", "\u00e9", "x" * 70,
                         "-x", ".hidden"])
NAMES = st.tuples(st.sampled_from(["", "./", "/", "../"]), st.lists(PARTS, min_size=1, max_size=4),
                  st.sampled_from(["", "/"])).map(lambda t: t[0] + "/".join(t[1]) + t[2])
TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                         tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE])
ENTRIES = st.builds(lambda name, kind, data, link: entry(name, data if kind in tarfile.REGULAR_TYPES else b"",
                                                         kind, link),
                    NAMES, TYPES, st.binary(max_size=64), st.sampled_from(["", "/etc/passwd", "../..", "mine/bundle.json"]))


@FUZZ
@given(extra=st.lists(ENTRIES, max_size=5), keep=st.booleans(), fmt=st.sampled_from([tarfile.PAX_FORMAT,
                                                                                      tarfile.GNU_FORMAT]))
@example(extra=[entry("mine/../../escaped", b"x")], keep=True, fmt=tarfile.PAX_FORMAT)
@example(extra=[entry("mine/link", kind=tarfile.SYMTYPE, link="/etc/passwd")], keep=True, fmt=tarfile.GNU_FORMAT)
def test_archives_of_any_entries_are_installed_or_refused(tmp_path, extra, keep, fmt):
    entries = (folder_entries(SOURCE) if keep else []) + extra
    try:
        data = tar_gz(entries, fmt)
    except (ValueError, UnicodeError):   # a name tarfile itself cannot write in this format
        return
    name = install_or_refuse(tmp_path, data)
    if name is not None:   # only regular files and the folder itself got in
        assert all(e[0].type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE) for e in entries)


def test_the_fuzzed_archive_itself_installs(tmp_path):
    """The good archive is good: the fuzzing starts from something that passes."""
    assert install_or_refuse(tmp_path, gzip.compress(GOOD_TAR)) == "mine"
    assert tarfile.open(fileobj=io.BytesIO(GOOD_TAR)).getnames()[:2] == ["mine", "mine/bundle.json"]


def test_upload_bodies_get_a_201_or_a_4xx_with_the_reason(tmp_path, monkeypatch):
    """The same through the real aiohttp app (POST /api/bundles, test_fuzz_web's rig): never a 500."""
    pytest.importorskip("aiohttp")
    from fixtures_control import TOKEN, WebRig, assert_clear

    user = tmp_path / "models"
    monkeypatch.setenv("PLAYBACH_MODELS", str(user))
    rig = WebRig(tmp_path / "web")

    @settings(FUZZ, max_examples=60)
    @given(body=st.binary(max_size=2000) | st.lists(st.tuples(st.integers(0, len(GOOD_TAR) - 1), st.integers(0, 255)),
                                                     max_size=4).map(lambda c: changed(c)),
           replace=st.booleans())
    @example(body=gzip.compress(GOOD_TAR), replace=False)
    def upload(body, replace):
        status, answer, _ = rig.send("POST", "/api/bundles" + "?replace=1" * replace, body,
                                     {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/gzip"})
        assert_clear(status, answer)
        left = everything_in(user)
        if status == 201:
            name = json.loads(answer)["installed"]
            assert left[0] == name and all(p.startswith(name + "/") for p in left[1:])
            shutil.rmtree(user / name)
        else:
            assert 400 <= status < 500 and json.loads(answer)["error"] and left == [], (status, answer, left)

    try:
        upload()
    finally:
        rig.close()


def changed(changes: list[tuple[int, int]]) -> bytes:
    raw = bytearray(GOOD_TAR)
    for at, value in changes:
        raw[at] = value
    return gzip.compress(bytes(with_checksums(raw)))
