"""The Postgres stack's backup recipe of docs/docker.md, for real: `pg-backup` writes a pg_dump
while the stack serves, everything is wiped (`down --volumes`), the dump is restored into a new
Postgres with `pg_restore`, and the replicas serve exactly the items there were, with new ids
above every old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import http
from support.stack import POSTGRES, add_item, up


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
    return {"items": before, "highest_id": deleted, "outputs": [run.stdout for run in runs], "env": env}


def test_each_run_writes_a_dump_and_keeps_the_newest_ones(backed_up, backups):
    assert all("pg-backup: wrote /backups/items-" in output for output in backed_up["outputs"])
    assert len(list(backups.glob("items-*.dump"))) == 2
    assert "pg-backup: removed" in backed_up["outputs"][-1]


@pytest.fixture(scope="module")
def restored(project, backed_up, backups, figure):
    newest = max(backups.glob("items-*.dump"), key=lambda path: path.stat().st_mtime)
    # The recipe: wipe, start an empty Postgres, restore, then start the rest (migrate grants the
    # serving role again, with the new password).
    project("down", "--volumes", log="pg-restore.log")
    project("up", "-d", "--wait", "postgres", log="pg-restore.log")
    project("run", "--rm", "pg-backup", "pg_restore", "--dbname=items", "--no-owner", "--no-privileges",
            "--exit-on-error", f"/backups/{newest.name}", env=backed_up["env"], log="pg-restore.log")
    up(project, POSTGRES, log="pg-restore.log")
    figure("pg_dump round trip: items", len(backed_up["items"]))
    return {"items": listed(project.web_url)}


def test_the_restored_stack_serves_exactly_the_items_backed_up(restored, backed_up):
    assert restored["items"] == backed_up["items"]


def test_new_items_get_ids_above_every_id_handed_out_before_the_backup(project, restored, backed_up):
    assert add_item(project.web_url, "after the restore") > backed_up["highest_id"]
