"""Hallmark JSON: the canonical report document, written as stored (schema: docs/report-schema.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from hallmark.report.base import ReportFormat

MEDIA_TYPE = "application/vnd.hallmark.vulnerability-report.v1+json"


class HallmarkJsonFormat(ReportFormat):
    """The report itself, pretty-printed with sorted keys so diffs of two reports are readable."""

    name = "json"
    media_type = MEDIA_TYPE
    extension = "json"

    def render(self, report: Mapping[str, Any]) -> str:
        return orjson.dumps(dict(report), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
