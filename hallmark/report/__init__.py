"""Report formats and VEX triage, all converting FROM the Hallmark JSON report.

Server/CLI API::

    from hallmark.report import render, media_type, apply_vex, load_vex, parse_vex
    text = render(report_dict, "sarif")        # json | sarif | cyclonedx | openvex | table
    report_dict = apply_vex(report_dict, [parse_vex(body)])   # suppress triaged findings

One module per format (``hallmark_json``, ``sarif``, ``cyclonedx``, ``openvex``, ``table``),
each a :class:`ReportFormat`; ``FORMATS`` maps the CLI/API names to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hallmark.report.base import ReportFormat, summarize, threshold_crossed
from hallmark.report.cyclonedx import CycloneDxFormat
from hallmark.report.hallmark_json import HallmarkJsonFormat
from hallmark.report.openvex import OpenVexFormat
from hallmark.report.sarif import SarifFormat
from hallmark.report.table import TableFormat
from hallmark.report.vex import VexDocument, VexError, apply_vex, load_vex, parse_vex

FORMATS: dict[str, ReportFormat] = {
    f.name: f for f in (HallmarkJsonFormat(), SarifFormat(), CycloneDxFormat(), OpenVexFormat(), TableFormat())
}


def get_format(name: str) -> ReportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown report format {name!r}: use one of {', '.join(FORMATS)}") from None


def render(report: Mapping[str, Any], fmt: str = "json") -> str:
    """Render a (stored) Hallmark JSON report in ``fmt``."""
    return get_format(fmt).render(report)


def media_type(fmt: str) -> str:
    return get_format(fmt).media_type


__all__ = [
    "FORMATS",
    "ReportFormat",
    "VexDocument",
    "VexError",
    "apply_vex",
    "get_format",
    "load_vex",
    "media_type",
    "parse_vex",
    "render",
    "summarize",
    "threshold_crossed",
]
