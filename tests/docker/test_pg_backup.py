"""The Postgres stack's backup recipe of docs/docker.md, for real: `pg-backup` writes a pg_dump
while the stack serves; `pg-backup restore` puts it back over the live database (items added since
are gone, and their ids are never handed out again), and again after everything was wiped
(`down --volumes`). Each time the replicas serve exactly the items of the backup."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import http
from support.load import add_item
from support.stack import POSTGRES, up


def listed(web_url: str) -> list[dict]:
    return http.request(web_url + "/api/items", timeout=30).json()


@pytest.fixture(scope="module")
def backups(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pg-backups")


@pytest.fixture(scope="module")
def backed_up(project, built_images, backups):
    env = {"PG_BACKUP_DIR": str(backups), "PG_BACKUP_KEEP": "2"}
    project("down", "--volumes", "--remove-orphans", files=POSTGRES.files)
    up(project, POSTGRES)
    for n in range(30):
        add_item(project.web_url, f"backed up {n} \u00e9\u2603")
    deleted = add_item(project.web_url, "deleted before the backup")
    assert http.request(f"{project.web_url}/api/items/{deleted}", "DELETE").status == 204
    before = listed(project.web_url)
    runs = [project("run", "--rm", "pg-backup", env=env, log="pg-backup.log") for _ in range(3)]
    # What pages may hold after the backup: items, and ids, the backup does not have.
    added_since = max(add_item(project.web_url, f"added after the backup {n}") for n in range(5))
    return {"items": before, "highest_id": deleted, "added_since": added_since,
            "outputs": [run.stdout for run in runs], "env": env}


def test_each_run_writes_a_dump_and_keeps_the_newest_ones(backed_up, backups):
    assert all("pg-backup: wrote /backups/items-" in output for output in backed_up["outputs"])
    assert len(list(backups.glob("items-*.dump"))) == 2
    assert "pg-backup: removed" in backed_up["outputs"][-1]


def newest_dump(backups: Path) -> str:
    return max(backups.glob("items-*.dump"), key=lambda path: path.stat().st_mtime).name


@pytest.fixture(scope="module")
def restored_over_live(project, backed_up, backups, figure):
    # The recipe: stop what serves, restore, start again (migrate grants the serving role again).
    project("stop", "api", "web", log="pg-restore.log")
    done = project("run", "--rm", "pg-backup", "restore", f"/backups/{newest_dump(backups)}",
                   env=backed_up["env"], log="pg-restore.log")
    up(project, POSTGRES, log="pg-restore.log")
    figure("pg_dump round trip: items", len(backed_up["items"]))
    return {"items": listed(project.web_url), "output": done.stdout,
            "new_id": add_item(project.web_url, "after the restore")}


def test_a_restore_over_the_live_database_brings_back_exactly_the_items_backed_up(restored_over_live, backed_up):
    assert "pg-backup: restored" in restored_over_live["output"]
    assert restored_over_live["items"] == backed_up["items"]


def test_ids_handed_out_after_the_backup_are_never_handed_out_again(restored_over_live, backed_up):
    assert restored_over_live["new_id"] > backed_up["added_since"]


@pytest.fixture(scope="module")
def restored_after_wipe(project, backed_up, backups, restored_over_live):
    # Everything gone (a new host, a lost volume): an empty Postgres, then the same restore.
    project("down", "--volumes", log="pg-restore.log")
    project("up", "-d", "--wait", "postgres", log="pg-restore.log")
    project("run", "--rm", "pg-backup", "restore", f"/backups/{newest_dump(backups)}",
            env=backed_up["env"], log="pg-restore.log")
    up(project, POSTGRES, log="pg-restore.log")
    return {"items": listed(project.web_url), "new_id": add_item(project.web_url, "after the wipe")}


def test_after_a_wipe_the_restored_stack_serves_exactly_the_items_backed_up(restored_after_wipe, backed_up):
    assert restored_after_wipe["items"] == backed_up["items"]


def test_after_a_wipe_new_ids_are_above_every_id_in_the_backup(restored_after_wipe, backed_up):
    assert restored_after_wipe["new_id"] > backed_up["highest_id"]
