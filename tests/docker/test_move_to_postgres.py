"""The "Scaling out" move of docs/docker.md, for real: the default stack's SQLite volume with items, moved
into the Postgres stack with `items-api transfer`, then served by three replicas unchanged; and the
way back to SQLite."""

from __future__ import annotations

import pytest

from support import http
from support.compose import inspect
from support.load import add_item
from support.stack import POSTGRES, SQLITE, up

# As in docs/docker.md: in a one-off container of the migrate service, which signs in as the
# owner of the items (its DATABASE_PASSWORD_FILE); the serving role could not create the schema.
TRANSFER = ["run", "--rm", "--no-deps", "-e", "TRANSFER_FROM=/data/app.db",
            "-e", "TRANSFER_TO=postgres://items@postgres:5432/items?sslmode=disable"]


def listed(web_url: str) -> list[dict]:
    return http.request(web_url + "/api/items", timeout=30).json()


@pytest.fixture(scope="module")
def on_sqlite(project, built_images):
    for variant in (POSTGRES, SQLITE):
        project("down", "--volumes", "--remove-orphans", files=variant.files)
    up(project, SQLITE)
    for n in range(25):
        add_item(project.web_url, f"from sqlite {n}")
    deleted = add_item(project.web_url, "deleted before the move")
    assert http.request(f"{project.web_url}/api/items/{deleted}", "DELETE").status == 204
    return {"items": listed(project.web_url), "highest_id": deleted}


@pytest.fixture(scope="module")
def moved(project, on_sqlite, figure):
    # The steps of docs/docker.md: stop the SQLite API, start Postgres, transfer, start the rest.
    project("stop", "api", files=SQLITE.files, log="move.log")
    project.files = POSTGRES.files
    project("up", "-d", "--wait", "postgres", log="move.log")
    done = project(*TRANSFER, "-v", f"{project.name}_db-data:/data", "migrate", "transfer", log="move.log")
    up(project, POSTGRES, log="move.log")
    figure("sqlite to postgres move: items", len(on_sqlite["items"]))
    return {"output": done.stdout, "items": listed(project.web_url)}


def test_the_transfer_reports_every_item_verified(moved, on_sqlite):
    expected = f"transfer: {len(on_sqlite['items'])} items copied"
    assert expected in moved["output"] and "verified" in moved["output"]


def test_the_postgres_stack_serves_exactly_the_sqlite_items(moved, on_sqlite):
    assert moved["items"] == on_sqlite["items"]


def test_new_items_get_ids_above_every_id_sqlite_handed_out(project, moved, on_sqlite):
    assert add_item(project.web_url, "after the move") > on_sqlite["highest_id"]


def test_the_sqlite_volume_is_kept_for_going_back(project, moved):
    assert inspect("volume", f"{project.name}_db-data") is not None


@pytest.fixture(scope="module")
def moved_back(project, moved):
    added = add_item(project.web_url, "added on postgres")
    project("stop", "api", "web", log="move-back.log")
    project("run", "--rm", "--no-deps", "-v", f"{project.name}_db-data:/data",
            "-e", "TRANSFER_TO=/data/from-postgres.db",
            "-e", "TRANSFER_FROM=postgres://items@postgres:5432/items?sslmode=disable",
            "migrate", "transfer", log="move-back.log")
    project("down", log="move-back.log")
    project("run", "--rm", "--no-deps", "api", "restore", "/data/from-postgres.db",
            files=SQLITE.files, log="move-back.log")
    up(project, SQLITE, log="move-back.log")
    return {"added": added, "items": listed(project.web_url)}


def test_going_back_to_sqlite_keeps_what_was_added_on_postgres(moved_back):
    assert moved_back["added"] in {item["id"] for item in moved_back["items"]}


def test_going_back_to_sqlite_hands_out_no_postgres_id_again(project, moved_back):
    assert add_item(project.web_url, "back on sqlite") > max(item["id"] for item in moved_back["items"])
