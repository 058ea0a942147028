"""Input policy of the bar validator (issue 14, defect 6): unkeyed bars and non-UTF-8 JSON are dead-lettered
with a reason instead of being accepted."""

from __future__ import annotations

import json

from worker.validate import Bar, BarValidator, Reason, Rejection

DOC = {"symbol": "EURUSD", "time": 1_700_000_000, "open": 1.1, "high": 1.2, "low": 1.0, "close": 1.15, "volume": 10.0}


def test_a_null_key_is_rejected_with_its_own_reason():
    v = BarValidator()
    got = v.check(None, json.dumps(DOC).encode())
    assert isinstance(got, Rejection) and got.reason is Reason.MISSING_KEY and "EURUSD" in got.detail
    assert isinstance(v.check(b"EURUSD", json.dumps(DOC).encode()), Bar)


def test_only_utf8_json_is_accepted():
    v = BarValidator()
    text = json.dumps(DOC)
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        got = v.check(b"EURUSD", text.encode(encoding))
        assert isinstance(got, Rejection) and got.reason is Reason.MALFORMED_JSON, encoding
    assert isinstance(v.check(b"EURUSD", text.encode("utf-8")), Bar)
    # non-ASCII text is fine in UTF-8 (symbols are ASCII by the schema; extra fields may carry any text)
    doc = {**DOC, "venue": "B\u00f6rse"}
    assert isinstance(v.check(b"EURUSD", json.dumps(doc, ensure_ascii=False).encode()), Bar)
