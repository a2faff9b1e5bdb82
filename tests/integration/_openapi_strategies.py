"""Hypothesis strategies built from a live server's /openapi.json, for the API fuzz test (not a test module).

A small JSON-Schema walker (objects, arrays, scalars, enums, const, anyOf/oneOf, $ref): it yields bodies that
mostly fit the schema, so they get past parsing into validation and the engine, mixed with arbitrary JSON and
out-of-range numbers, so the error paths are hit as well. `hints` swaps in strategies for named properties
(a real image, a real model id) so a fair share of requests reach the model.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# Mostly small (fast to decode), sometimes out of range on either side.
INTEGERS = st.one_of(st.integers(-3, 12), st.sampled_from([0, -1, 10**6, 2**63, -(2**63)]))


def from_schema(
    schema: dict[str, Any], spec: dict[str, Any], *, hints: dict[str, st.SearchStrategy], depth: int = 0
):
    """A strategy for values of `schema` (resolved against `spec`'s components)."""
    if depth > 6:
        return ANY_JSON
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return from_schema(spec["components"]["schemas"][name], spec, hints=hints, depth=depth + 1)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, spec, hints=hints, depth=depth + 1) for s in schema[key]])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return _object(schema, spec, hints=hints, depth=depth)
    if kind == "array":
        items = from_schema(schema.get("items", {}), spec, hints=hints, depth=depth + 1)
        return st.lists(items, min_size=0, max_size=3)
    simple = {
        "string": st.text(max_size=30),
        "integer": INTEGERS,
        "number": st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=10),
        "boolean": st.booleans(),
        "null": st.none(),
    }
    return simple.get(kind, ANY_JSON)


def _object(schema: dict[str, Any], spec: dict[str, Any], *, hints: dict[str, st.SearchStrategy], depth: int):
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))

    def value_for(name: str, sub: dict[str, Any]) -> st.SearchStrategy:
        schema_values = from_schema(sub, spec, hints=hints, depth=depth + 1)
        if name in hints:  # mostly the hint, so that a fair share of requests is valid
            return st.one_of(hints[name], hints[name], hints[name], schema_values)
        return schema_values

    fixed = {name: value_for(name, sub) for name, sub in properties.items() if name in required}
    optional = {name: value_for(name, sub) for name, sub in properties.items() if name not in required}
    body = st.fixed_dictionaries(fixed, optional=optional)
    # Sometimes an unknown key, sometimes a required key missing.
    extra = st.dictionaries(st.text(min_size=1, max_size=8), JSON_SCALARS, max_size=1)
    return st.one_of(
        body,
        body,
        body,
        body,
        st.tuples(body, extra).map(lambda pair: {**pair[0], **pair[1]}),
        body.map(lambda d: {k: v for i, (k, v) in enumerate(d.items()) if i != 0}),
    )


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path template, operation) for every operation in the spec."""
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "delete", "patch")
    ]


def json_body_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {})
    return content.get("application/json", {}).get("schema")
