"""Items live in the named volume: they survive a restart of the API container, `down` and `up`,
and a backup/restore with the commands of docs/docker.md; `down -v` removes them."""

from __future__ import annotations

import pytest

from support.compose import inspect
from support.load import add_item, all_ids
from support.stack import SQLITE, up


@pytest.fixture(scope="module", params=[SQLITE], ids=["sqlite-1-replica"])
def variant(request):
    return request.param


@pytest.fixture(scope="module")
def stack(project, built_images, variant):
    # A fresh volume: the items below must be the only ones a restore could bring back.
    project("down", "--volumes", files=variant.files)
    up(project, variant)
    return project


@pytest.fixture(scope="module")
def volume(stack):
    return f"{stack.name}_db-data"


@pytest.fixture(scope="module")
def kept(stack):
    return {add_item(stack.web_url, f"persist {n} {stack.name}") for n in range(1, 6)}


def test_five_items_added_through_the_web_tier_get_five_ids(kept):
    assert len(kept) == 5


@pytest.fixture(scope="module")
def after_restart(stack, kept):
    stack("restart", "api", log="restart.log")
    stack.wait_healthy("api")
    return all_ids(stack.web_url)


def test_every_item_survives_a_restart_of_the_api_container(kept, after_restart):
    assert kept <= after_restart


@pytest.fixture(scope="module")
def after_down(stack, variant, volume, after_restart):
    stack("down", log="down.log", files=variant.files)
    return inspect("volume", volume)


def test_down_keeps_the_volume(after_down):
    assert after_down is not None


@pytest.fixture(scope="module")
def after_up(stack, variant, after_down):
    up(stack, variant, log="up-existing-volume.log")
    return all_ids(stack.web_url)


def test_every_item_survives_down_and_up(kept, after_up):
    assert kept <= after_up


@pytest.fixture(scope="module")
def backup(stack, after_up, tmp_path_factory):
    """`items-api backup` inside the container, copied out to the host."""
    name = f"{stack.name}.db"
    stack("exec", "-T", "api", "items-api", "backup", f"/data/backups/{name}", log="backup.log")
    local = tmp_path_factory.mktemp("backup") / name
    stack("cp", f"api:/data/backups/{name}", str(local), log="backup.log")
    return local


def test_the_backup_copied_out_of_the_volume_is_not_empty(backup):
    assert backup.stat().st_size > 0


@pytest.fixture(scope="module")
def restored(stack, backup):
    """An item added after the backup, then `items-api restore` of the backup with the API
    stopped (the procedure in docs/docker.md)."""
    added_after = add_item(stack.web_url, f"added after the backup {stack.name}")
    stack("stop", "api", log="restore.log")
    stack("cp", str(backup), "api:/data/restore.db", log="restore.log")
    stack("run", "--rm", "--no-deps", "api", "restore", "/data/restore.db", log="restore.log")
    stack("start", "api", log="restore.log")
    stack.wait_healthy("api")
    return added_after, all_ids(stack.web_url)


def test_every_backed_up_item_is_there_after_the_restore(kept, restored):
    assert kept <= restored[1]


def test_an_item_added_after_the_backup_is_gone_after_the_restore(restored):
    added_after, ids = restored
    assert added_after not in ids


@pytest.fixture(scope="module")
def after_down_v(stack, variant, volume, restored):
    stack("down", "--volumes", log="down-v.log", files=variant.files)
    return inspect("volume", volume)


def test_down_v_removes_the_volume_and_the_data(after_down_v):
    assert after_down_v is None
