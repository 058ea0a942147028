"""Secrets never reach a log line: URL passwords are masked whole, raw '@' included (issue 14, defect 4)."""

from __future__ import annotations

import pytest

from worker.settings import load_settings, mask_url

PASSWORD = "p@ss@w0rd-s3cr3t"  # 16 characters with raw '@': the old mask left 'ss@w0rd-s3cr3t' visible


@pytest.mark.parametrize(
    "url, masked",
    [
        ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
        (f"redis://:{PASSWORD}@redis.internal:6380/0", "redis://:***@redis.internal:6380/0"),
        (f"rediss://app:{PASSWORD}@h:1", "rediss://app:***@h:1"),
        (f"kafka://b1:9093;kafka://u:{PASSWORD}@b2:9093", "kafka://b1:9093;kafka://u:***@b2:9093"),
        ("redis://localhost:6379", "redis://localhost:6379"),
        ("b1:9093,b2:9093", "b1:9093,b2:9093"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_no_piece_of_a_password_with_at_signs_in_the_settings_line():
    s = load_settings(
        {}, redis_url=f"redis://:{PASSWORD}@localhost:6379/0", broker_url=f"kafka://user:{PASSWORD}@localhost:9092"
    )
    line = repr(s) + str(s.redacted())
    assert "***" in line
    for piece in ("p@ss", "ss@w0rd", "w0rd-s3cr3t", "s3cr3t"):
        assert piece not in line
