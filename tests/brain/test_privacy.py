"""Secrets never reach the logs."""

from __future__ import annotations

import logging

import pytest

from brain.privacy import SecretFilter, redact_secrets


@pytest.mark.parametrize(
    "secret",
    [
        "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1",
        "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp",
        "xapp-1-A0123456789-1234567890123-abcdef",
    ],
)
def test_token_shapes_are_masked_even_when_unknown(secret: str) -> None:
    assert secret not in redact_secrets(f"calling https://api/bot{secret}/getMe failed")


def test_filter_masks_configured_secrets_in_log_records(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.privacy")
    handler_filter = SecretFilter(["s3cr3t-signing"])
    logger.addFilter(handler_filter)
    with caplog.at_level(logging.INFO, logger="test.privacy"):
        logger.info("signature mismatch with %s", "s3cr3t-signing")
    logger.removeFilter(handler_filter)
    assert "s3cr3t-signing" not in caplog.text
    assert "***" in caplog.text
