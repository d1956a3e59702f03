"""The throwaway PostgreSQL cluster fixture that the Postgres backend's tests will use."""

from __future__ import annotations


def test_the_throwaway_cluster_answers_psql(postgres):
    assert postgres.psql("SELECT 1") == "1"


def test_the_throwaway_cluster_listens_on_loopback_only(postgres):
    assert postgres.psql("SHOW listen_addresses") == "127.0.0.1"


def test_the_throwaway_cluster_runs_without_fsync(postgres):
    assert postgres.psql("SHOW fsync") == "off"


def test_each_database_handed_out_is_new_and_empty(postgres):
    url = postgres.create_database()
    database = url.rsplit("/", 1)[1]
    assert postgres.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database) == "0"
