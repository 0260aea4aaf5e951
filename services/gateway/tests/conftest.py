"""Fixtures the gateway's tests share."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from libs.logs import JsonFormatter
from services.gateway.security_events import SECURITY_LOGGER


@pytest.fixture
def security_log() -> Iterator[io.StringIO]:
    """What the `security` logger writes, as the services' JSON formatter writes it."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(JsonFormatter("gateway"))
    logger = logging.getLogger(SECURITY_LOGGER)
    logger.addHandler(handler)
    try:
        yield output
    finally:
        logger.removeHandler(handler)
