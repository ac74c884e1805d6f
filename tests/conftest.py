"""Test suite root: the testbed's fixtures are available to every integration test."""

pytest_plugins = ["edgeferry_testbed.pytest_plugin"]
