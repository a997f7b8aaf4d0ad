"""Shared pytest set-up: tests marked `slow` run only when asked for (`-m slow`), as the
marker's description in pyproject.toml promises."""

import pytest


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
