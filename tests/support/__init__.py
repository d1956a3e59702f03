"""Helpers shared by every system test and by the smoke test (each written once)."""
