"""Shared fixtures: the demo dataset written once per test session, offline, single-threaded."""

from __future__ import annotations

import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any hub import: never wait on the network
os.environ.setdefault("ACBENCH_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The demo dataset cache lives in a per-session temporary folder."""
    cache = tmp_path_factory.mktemp("acbench-cache")
    old = os.environ.get("ACBENCH_CACHE")
    os.environ["ACBENCH_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("ACBENCH_CACHE", None)
    else:
        os.environ["ACBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def demo_root(_isolated_cache):
    from acbench.data.demo import materialise_demo

    return materialise_demo(seed=0)


@pytest.fixture(scope="session")
def brick(demo_root):
    from acbench.data.mvtec import load_category
    from acbench.protocol import SplitConfig

    return load_category(demo_root, "brick", SplitConfig(), dataset="demo")


@pytest.fixture(scope="session")
def grass(demo_root):
    from acbench.data.mvtec import load_category
    from acbench.protocol import SplitConfig

    return load_category(demo_root, "grass", SplitConfig(), dataset="demo")


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Any connection attempt (a weight download, a hub lookup) fails the test; TORCH_HOME is empty."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("ACBENCH_OFFLINE", "1")
