"""pytest plugin for the test run against PaddleSeg develop (``-p helpers.paddleseg_stdout``,
see .ci/run).

paddleseg 2.8.0's logger prints to the ``sys.stdout`` of the moment; develop's logs through
``logging.StreamHandler``s that keep the ``sys.stdout`` of import time, so ``capsys`` misses
what a terminal shows. During each test those handlers write to the test's ``sys.stdout``."""

import logging
import sys

import pytest


def _paddleseg_stdout_handlers():
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not (name.startswith("ppseg") or "paddleseg" in name):
            continue
        for handler in getattr(logger, "handlers", ()):
            if type(handler) is logging.StreamHandler and handler.stream not in (
                    sys.stderr, sys.__stderr__):
                yield handler


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    handlers = list(_paddleseg_stdout_handlers())
    before = [handler.stream for handler in handlers]
    for handler in handlers:
        handler.setStream(sys.stdout)
    try:
        yield
    finally:
        for handler, stream in zip(handlers, before):
            handler.setStream(stream)
