"""JSON schemas from frameworks (pydantic ``model_json_schema``) in the form local cores handle best."""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 32


def inline_local_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``{"$ref": "#/$defs/X"}`` replaced by the definition and ``$defs`` removed.

    Pydantic puts nested models in ``$defs``; the sim core's example builder and
    grammar builders for small models expect a self-contained schema.
    Recursive definitions are left as references below a fixed depth.
    """
    defs = schema.get("$defs") or schema.get("definitions")
    if not defs:
        return schema

    def resolve(node: Any, depth: int) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and depth < _MAX_DEPTH:
                name = ref.rsplit("/", 1)[-1]
                if ref.startswith(("#/$defs/", "#/definitions/")) and name in defs:
                    merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
                    return resolve(merged, depth + 1)
            return {k: resolve(v, depth) for k, v in node.items() if k not in ("$defs", "definitions")}
        if isinstance(node, list):
            return [resolve(v, depth) for v in node]
        return node

    return resolve(schema, 0)  # type: ignore[no-any-return]
