"""A schema check of rendered Kubernetes objects against the official ``kubernetes`` client's models.

The client's model classes are generated from the Kubernetes OpenAPI document: each knows its
fields (``attribute_map``: Python name -> JSON name), their types (``openapi_types``) and which are
required. Walking an object with them finds what ``kubectl apply`` would reject (a misspelt field,
a string where a number belongs, a missing required field), without a cluster. ``apiVersion`` and
``kind`` are checked against the client's API groups, so a kind in a version the server no longer
serves (``extensions/v1beta1`` Ingress) is refused too.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import kubernetes.client as k8s

_LIST = re.compile(r"^(?:list|List)\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")


def model_for(api_version: str, kind: str) -> type:
    """The model class of ``apiVersion``/``kind``; ValueError when the client knows no such pair."""
    group, _, version = api_version.rpartition("/")
    cls = getattr(k8s, version.capitalize() + kind, None)
    if cls is None or not hasattr(cls, "openapi_types"):
        raise ValueError(f"unknown kind {kind!r} in {api_version!r}")
    # the group: its API class must offer creating this kind (CoreV1Api for "v1", AppsV1Api for "apps/v1")
    prefix = "".join(p.capitalize() for p in group.removesuffix(".k8s.io").split(".")) if group else "Core"
    api = getattr(k8s, f"{prefix}{version.capitalize()}Api", None)
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
    if api is None or not any(hasattr(api, f"create_{s}{snake}") for s in ("namespaced_", "")):
        raise ValueError(f"{api_version} serves no kind {kind!r}")
    return cls


def _required(cls: type) -> set[str]:
    fields = getattr(cls, "model_fields", None)
    if fields is not None:  # client >= 35: pydantic models
        return {name for name, f in fields.items() if f.is_required()}
    found = set()
    for attr in cls.openapi_types:  # type: ignore[attr-defined]
        prop = getattr(cls, attr, None)
        if isinstance(prop, property) and prop.fset and "must not be `None`" in inspect.getsource(prop.fset):
            found.add(attr)
    return found


def _check_value(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check_value(item, m.group(1), f"{path}[{i}]", errors)
    elif m := _DICT.match(type_name):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        for key, item in value.items():
            _check_value(item, m.group(1) or m.group(2), f"{path}.{key}", errors)
    elif type_name == "object":  # IntOrString and free-form fields
        return
    elif type_name in ("str", "datetime", "date", "bytes"):
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {type(value).__name__} {value!r}")
    elif type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
    elif type_name == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            errors.append(f"{path}: expected a number, got {type(value).__name__} {value!r}")
    elif type_name == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {type(value).__name__} {value!r}")
    else:
        cls = getattr(k8s, type_name, None)
        if cls is None or not hasattr(cls, "openapi_types"):
            raise LookupError(f"{path}: the client has no model {type_name!r}")
        check_model(value, cls, path, errors)


def check_model(doc: Any, cls: type, path: str, errors: list[str]) -> None:
    """Append to ``errors`` every unknown field, wrong type and missing required field under ``doc``."""
    if not isinstance(doc, dict):
        errors.append(f"{path}: expected an object, got {type(doc).__name__}")
        return
    types: dict[str, str] = cls.openapi_types  # type: ignore[attr-defined]
    by_json = {json: attr for attr, json in cls.attribute_map.items()}  # type: ignore[attr-defined]
    for key, value in doc.items():
        attr = by_json.get(key)
        if attr is None:
            errors.append(f"{path}.{key}: unknown field of {cls.__name__}")
        elif value is not None:
            _check_value(value, types[attr], f"{path}.{key}", errors)
    for attr in sorted(_required(cls)):
        if doc.get(cls.attribute_map[attr]) is None:  # type: ignore[attr-defined]
            errors.append(f"{path}.{cls.attribute_map[attr]}: required by {cls.__name__}")  # type: ignore[attr-defined]


def validate(obj: dict[str, Any]) -> list[str]:
    """Every schema error of one object (``kind/name: problem`` lines); empty when it is valid."""
    name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    try:
        cls = model_for(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    except ValueError as exc:
        return [f"{name}: {exc}"]
    errors: list[str] = []
    check_model(obj, cls, name, errors)
    if not (obj.get("metadata") or {}).get("name"):
        errors.append(f"{name}: metadata.name missing")
    return errors
