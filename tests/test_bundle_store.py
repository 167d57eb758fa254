"""Your model onto the Pi (issue 23 item 3), the core: playbach/bundle_store.py installs a bundle
archive (a real tar.gz written to disk, a real temp folder beside, a real rename) or refuses it
with a reason and leaves nothing behind, and lists the shipped and the user's bundles."""
from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest
from archives import MODEL, entry, everything_in, folder_entries, small_bundle, tar_gz

from playbach import bundle_store
from playbach.bundle_store import Refused
from playbach.errors import UserError


@pytest.fixture
def place(tmp_path):
    """(shipped folder with 'default', user folder, a good bundle folder 'mine' to pack)."""
    shipped, user = tmp_path / "opt" / "models", tmp_path / "state" / "models"
    small_bundle(shipped / "default")
    user.mkdir(parents=True)
    return shipped, user, small_bundle(tmp_path / "src" / "mine")


def install(place, data: bytes, replace: bool = False, tmp_name: str = "a.tar.gz") -> str:
    shipped, user, _ = place
    archive = user.parent / tmp_name
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(data)
    try:
        with bundle_store.staging(user) as tmp:
            return bundle_store.install(archive, tmp, shipped, user, replace)
    finally:
        archive.unlink()


def test_an_archive_is_installed_readable_by_others_and_listed(place):
    shipped, user, mine = place
    assert install(place, tar_gz(folder_entries(mine))) == "mine"
    assert everything_in(user) == ["mine", "mine/bundle.json", f"mine/{MODEL}"]
    assert (user / "mine" / MODEL).read_bytes() == (mine / MODEL).read_bytes()
    assert (user / "mine").stat().st_mode & 0o777 == 0o775 and (user / "mine" / MODEL).stat().st_mode & 0o777 == 0o664
    assert bundle_store.installed_bundles(shipped, user) == ["default", "mine"]
    assert bundle_store.bundle_path("mine", shipped, user) == user / "mine"
    assert bundle_store.describe(shipped, user) == [
        {"name": "default", "where": "shipped", "ok": True, "error": None},
        {"name": "mine", "where": "yours", "ok": True, "error": None}]


def test_an_archive_without_the_folder_entry_and_with_dot_slash_names_is_installed(place):
    _, user, mine = place
    entries = [(e[0].replace(name="./" + e[0].name), e[1]) for e in folder_entries(mine)[1:]]
    assert install(place, tar_gz(entries, tarfile.GNU_FORMAT)) == "mine"
    assert everything_in(user) == ["mine", "mine/bundle.json", f"mine/{MODEL}"]


def test_the_same_name_again_is_refused_unless_replace_and_replace_swaps_it_whole(place):
    _, user, mine = place
    install(place, tar_gz(folder_entries(mine)))
    (mine / "notes.txt").write_text("second version")
    with pytest.raises(bundle_store.Taken, match="installed already") as refused:
        install(place, tar_gz(folder_entries(mine)))
    assert refused.value.status == 409 and not (user / "mine" / "notes.txt").exists()
    assert install(place, tar_gz(folder_entries(mine)), replace=True) == "mine"
    assert everything_in(user) == ["mine", "mine/bundle.json", "mine/notes.txt", f"mine/{MODEL}"]


def test_a_shipped_name_is_refused(place):
    _, user, mine = place
    with pytest.raises(bundle_store.Taken, match="'default' is a shipped bundle's name"):
        install(place, tar_gz(folder_entries(mine, "default")), replace=True)
    assert everything_in(user) == []


def bad_bundle(mine: Path, how: str) -> list:
    if how == "model changed":
        (mine / MODEL).write_bytes(b"x" * (mine / MODEL).stat().st_size)
    elif how == "model missing":
        (mine / MODEL).unlink()
    elif how == "schema":
        (mine / "bundle.json").write_text((mine / "bundle.json").read_text().replace('"codec"', '"codex"'))
    elif how == "format":
        (mine / "bundle.json").write_text((mine / "bundle.json").read_text().replace('"format": 2', '"format": 9'))
    return folder_entries(mine)


@pytest.mark.parametrize("how, says", [
    ("model changed", f"not a playable bundle: mine/{MODEL}: sha256 does not match"),
    ("model missing", f"not a playable bundle: mine/{MODEL}: listed in bundle.json but missing"),
    ("schema", "not a playable bundle: mine/bundle.json: missing key 'codec'"),
    ("format", "not a playable bundle: mine/bundle.json: unknown bundle format 9"),
])
def test_a_bundle_load_bundle_refuses_is_refused_naming_the_file(place, how, says):
    _, user, mine = place
    with pytest.raises(Refused) as refused:
        install(place, tar_gz(bad_bundle(mine, how)))
    assert str(refused.value).startswith(says) and refused.value.status == 400
    assert everything_in(user) == []


MINE = [entry("mine", kind=tarfile.DIRTYPE)]


@pytest.mark.parametrize("entries, says", [
    ([entry("../evil", b"x")], "'../evil': not NAME/FILE"),
    (MINE + [entry("mine/../../evil", b"x")], "'mine/../../evil': not NAME/FILE"),
    ([entry("/tmp/evil", b"x")], "'/tmp/evil': not NAME/FILE"),
    (MINE + [entry("mine/sub/evil", b"x")], "'mine/sub/evil': not NAME/FILE"),
    (MINE + [entry("mine\\..\\evil", b"x")], "not NAME/FILE"),
    (MINE + [entry("mine/link", kind=tarfile.SYMTYPE, link="/etc/passwd")], "'mine/link': a symbolic link"),
    (MINE + [entry("mine/hard", kind=tarfile.LNKTYPE, link="/etc/passwd")], "'mine/hard': a hard link"),
    (MINE + [entry("mine/tty", kind=tarfile.CHRTYPE)], "'mine/tty': a device"),
    (MINE + [entry("mine/sda", kind=tarfile.BLKTYPE)], "'mine/sda': a device"),
    (MINE + [entry("mine/pipe", kind=tarfile.FIFOTYPE)], "'mine/pipe': a FIFO"),
    ([entry("mine", kind=tarfile.SYMTYPE, link="/etc")], "'mine': a symbolic link"),
    (MINE + [entry("mine/sub", kind=tarfile.DIRTYPE)], "'mine/sub': a folder in the folder"),
    ([entry("bundle.json", b"{}")], "'bundle.json': a file outside a folder"),
    (MINE + [entry("mine/a", b"1"), entry("other/b", b"2")], "'other/b': a second folder"),
    (MINE + [entry("mine/a", b"1"), entry("mine/a", b"2")], "'mine/a': twice in the archive"),
    ([entry(".hidden", kind=tarfile.DIRTYPE)], "not NAME/FILE"),
    ([entry("-rf", kind=tarfile.DIRTYPE)], "not NAME/FILE"),
    ([], "the archive is empty"),
])
def test_an_archive_with_a_bad_entry_is_refused_and_nothing_is_written(place, tmp_path, entries, says):
    _, user, _ = place
    before = everything_in(tmp_path)
    with pytest.raises(Refused) as refused:
        install(place, tar_gz(entries))
    assert says in str(refused.value)
    assert everything_in(user) == [] and everything_in(tmp_path) == before   # nothing beside it either


@pytest.mark.parametrize("data, says", [
    (b"", "not a .tar.gz archive"),
    (b"PK\x03\x04 a zip file", "not a .tar.gz archive"),
    (gzip.compress(b"not a tar" * 100, mtime=0), "not a .tar.gz archive"),
    (gzip.compress(b"x" * 5000, mtime=0)[:-20], "not a .tar.gz archive"),
], ids=["empty", "zip", "gzip-of-no-tar", "gzip-cut-short"])   # (named: each pytest-xdist worker collects the same)
def test_what_is_not_a_tar_gz_is_refused(place, data, says):
    with pytest.raises(Refused, match=says):
        install(place, data)
    assert everything_in(place[1]) == []


def test_a_cut_archive_is_refused_and_its_partial_unpack_removed(place):
    _, user, mine = place
    (mine / MODEL).write_bytes(os.urandom(200_000))
    data = tar_gz(folder_entries(mine))
    with pytest.raises(Refused, match="not a .tar.gz archive|cut short"):
        install(place, data[:len(data) // 2])
    assert everything_in(user) == []


def test_the_size_caps(place, monkeypatch):
    _, user, mine = place
    monkeypatch.setattr(bundle_store, "MAX_ARCHIVE", 1000)
    with pytest.raises(bundle_store.TooBig, match="over the 0 MiB cap") as refused:
        install(place, tar_gz(folder_entries(mine)) + b"\0" * 100_000)
    assert refused.value.status == 413
    monkeypatch.undo()
    # a header that says 1 TB: refused before a byte of it is read
    with pytest.raises(bundle_store.TooBig, match="unpacks to more than 256 MiB"):
        install(place, tar_gz(MINE + [entry("mine/huge", size=1 << 40)]))
    # a gzip bomb: 300 MiB of zeros in a 300 kB archive, not inflated past the tar's end marker
    bomb = gzip.compress(b"\0" * (300 << 20), compresslevel=9)
    assert len(bomb) < 400_000
    started = time.monotonic()
    with pytest.raises(Refused, match="the archive is empty"):
        install(place, bomb)
    monkeypatch.setattr(bundle_store, "MAX_MEMBERS", 3)
    with pytest.raises(bundle_store.TooBig, match="more than 3 entries"):
        install(place, tar_gz(MINE + [entry(f"mine/f{i}", b"x") for i in range(5)]))
    assert everything_in(user) == []
    assert time.monotonic() - started < 5


def test_a_tar_header_claiming_a_huge_extended_header_is_refused_before_reading_it(place, monkeypatch):
    """tarfile reads a pax header's whole body at once: the decompressed stream's cap refuses it."""
    monkeypatch.setattr(bundle_store, "MAX_UNPACKED", 1 << 20)
    info = tarfile.TarInfo("mine")
    info.type, info.size = tarfile.XHDTYPE, 1 << 30
    raw = info.tobuf(tarfile.USTAR_FORMAT) + b"\0" * (2 << 20)
    with pytest.raises(bundle_store.TooBig, match="unpacks to more than 1 MiB"):
        install(place, gzip.compress(raw))
    assert everything_in(place[1]) == []


def test_a_folder_copied_in_by_scp_is_listed_checked_and_its_change_seen(place):
    shipped, user, mine = place
    shutil.copytree(mine, user / ".mine.part")      # hidden while it copies: not listed
    assert bundle_store.installed_bundles(shipped, user) == ["default"]
    (user / ".mine.part").rename(user / "mine")
    assert bundle_store.describe(shipped, user)[1] == {"name": "mine", "where": "yours", "ok": True, "error": None}
    time.sleep(0.01)
    (user / "mine" / MODEL).write_bytes(b"y" * (mine / MODEL).stat().st_size)   # replaced by a later copy
    row = bundle_store.describe(shipped, user)[1]
    assert not row["ok"] and row["error"] == f"{user / 'mine' / MODEL}: sha256 does not match bundle.json " \
                                             "(corrupt or replaced file)"
    shutil.copytree(mine, user / "default")
    rows = {(r["name"], r["where"]): r for r in bundle_store.describe(shipped, user)}
    assert rows["default", "yours"]["error"].endswith("a shipped bundle has this name; rename the "
                                                                     "folder to play it")
    assert bundle_store.installed_bundles(shipped, user) == ["default", "mine"]
    assert bundle_store.bundle_path("default", shipped, user) == shipped / "default"


def test_a_name_not_installed_is_never_a_path(place):
    shipped, user, _ = place
    for name in ("../opt/models/default", "/etc", "", None, 3, "nothing"):
        with pytest.raises(UserError, match="no installed bundle"):
            bundle_store.bundle_path(name, shipped, user)


def test_temp_folders_left_by_a_power_cut_are_cleared(place):
    _, user, mine = place
    stale = user / (bundle_store.STAGING + "old")
    (stale / "mine").mkdir(parents=True)
    os.utime(stale, (time.time() - 7200,) * 2)
    install(place, tar_gz(folder_entries(mine)))
    assert everything_in(user) == ["mine", "mine/bundle.json", f"mine/{MODEL}"]


def test_a_user_folder_that_cannot_be_made_is_a_clear_refusal(place, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(bundle_store.NoRoom, match=f"{blocked / 'models'}: cannot store a bundle there"):
        with bundle_store.staging(blocked / "models"):
            pass


def test_the_shipped_folder_is_the_configured_bundles_unless_that_is_one_of_the_users(place, monkeypatch):
    shipped, user, _ = place
    monkeypatch.setenv(bundle_store.ENV, str(user))
    assert bundle_store.folders(shipped / "default") == (shipped, user)
    assert bundle_store.folders(user / "mine") == (bundle_store.SHIPPED, user)
