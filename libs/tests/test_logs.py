"""JSON log lines: one object a line, the core fields always the logger's own."""

import json
import logging

from libs.logs import JsonFormatter


def _format(message: str, fields: dict[str, object]) -> dict[str, object]:
    record = logging.LogRecord("services.test", logging.INFO, __file__, 1, message, (), None)
    record.fields = fields
    return json.loads(JsonFormatter("test").format(record))


def test_fields_are_added_but_never_replace_core_keys() -> None:
    entry = _format("job %s queued", {"job_id": "j1", "level": "MEDIUM", "message": "spoofed", "service": "x"})
    assert entry["job_id"] == "j1"
    assert (entry["level"], entry["message"], entry["service"]) == ("info", "job %s queued", "test")
    assert set(entry) >= {"time", "level", "service", "logger", "message"}
