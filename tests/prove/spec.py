"""The agent's OpenAPI document, and a check that one real answer is what it documents."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

import edge.api

SPEC_PATH = Path(edge.api.__file__).parent / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def documented_routes() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in SPEC["paths"].items() for method in ops}


def check_answer(method: str, path: str, status: int, content_type: str, body: Any) -> None:
    """Raises AssertionError unless ``status`` is documented for the operation and ``body`` fits its schema."""
    responses = SPEC["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, (
        f"{method} {path}: {status} is not documented (documented: {sorted(responses)}); body {body!r:.300}"
    )
    documented = resolve(responses[str(status)])
    if "content" not in documented:
        return
    assert content_type in documented["content"], (
        f"{method} {path} {status}: content type {content_type}, documented {sorted(documented['content'])}"
    )
    if content_type != "application/json":
        return
    _validator(path, method.lower(), str(status)).validate(body)


@functools.cache
def _validator(path: str, method: str, status: str) -> Any:
    """The schema of one documented answer, checked once: a fuzz run checks thousands of answers against a few dozen
    schemas, and jsonschema.validate checks the schema itself again at every call."""
    documented = resolve(SPEC["paths"][path][method]["responses"][status])
    schema = documented["content"]["application/json"]["schema"]
    # The whole components tree rides along so "#/components/..." refs resolve against it.
    whole = {**schema, "components": SPEC["components"]}
    cls = jsonschema.validators.validator_for(whole)
    cls.check_schema(whole)
    return cls(whole)
