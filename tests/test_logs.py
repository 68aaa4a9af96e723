"""What reaches stderr: each warning text once in text mode, every record in JSON mode."""

from __future__ import annotations

import json
import logging

from recall.logs import setup_logging


def test_text_mode_shows_a_repeated_warning_once_and_json_keeps_every_record(capsys):
    log = logging.getLogger("recall.test_logs")
    try:
        setup_logging("text")
        for _ in range(3):
            log.warning("cap skipped: no %s column", "brand_id")
        log.warning("another warning")
        log.error("an error")
        log.error("an error")
        lines = capsys.readouterr().err.splitlines()
        assert lines == ["warning: cap skipped: no brand_id column", "warning: another warning",
                         "error: an error", "error: an error"]

        setup_logging("json")
        for _ in range(3):
            log.warning("cap skipped: no %s column", "brand_id")
        records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [r["message"] for r in records] == ["cap skipped: no brand_id column"] * 3
    finally:
        setup_logging("text")
