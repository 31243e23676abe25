"""``python -m modelops.crdgen``: write ``crds/modeldeployments.modelops.dev.yaml`` from the models.

pydantic's JSON Schema is turned into a Kubernetes *structural* schema: ``$ref``s are
inlined, ``Optional`` unions collapse to their type, numeric exclusive bounds use the
OpenAPI v3.0 form, free-form maps become ``x-kubernetes-preserve-unknown-fields``, and
the CEL rules of ``domain.spec.CEL_RULES`` are attached where they apply. The file is
generated, never edited; ``tests/unit/test_crd.py`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from modelops.domain import spec as api

DROP = {"title", "discriminator"}
CRD_PATH = Path("crds") / f"{api.PLURAL}.{api.GROUP}.yaml"
# The Helm chart ships the same file (Helm installs crds/ before templates).
CHART_CRD_PATH = Path("charts") / "modelops" / "crds" / CRD_PATH.name


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **extra}, defs)
    return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one inlined JSON Schema node (and its children) into OpenAPI v3 structural form."""
    node = dict(node)
    for union in ("anyOf", "oneOf"):
        if union in node:
            options = [o for o in node.pop(union) if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"unions are not structural: {options}")
            merged = {**options[0], **node}
            if node.get("default", "absent") is None:
                merged.pop("default")
            node = merged
    if node.get("default", "absent") is None:
        node.pop("default")
    for key in DROP:
        node.pop(key, None)
    if "exclusiveMinimum" in node:
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        node["maximum"], node["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
        node["type"] = "object"
        return node
    if node.get("type") == "object":
        if "properties" in node:
            node["properties"] = {k: _structural(v) for k, v in node["properties"].items()}
            node.pop("additionalProperties", None)  # extra="forbid": pruning refuses unknown fields
        elif isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = _structural(node["additionalProperties"])
        if "minLength" in node:  # dict min_length
            node["minProperties"] = node.pop("minLength")
    if node.get("type") == "array" and "items" in node:
        node["items"] = _structural(node["items"])
    if "enum" in node:
        node.setdefault("type", "string")
    return node


def _default_objects(model: type[BaseModel], node: dict[str, Any]) -> None:
    """Give nested objects with a default factory ``default: {}`` so the API server fills in their defaults."""
    props = node.get("properties", {})
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in props:
            continue
        annotation = field.annotation
        target = props[key]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if field.default_factory is not None:
                target["default"] = {}
            _default_objects(annotation, target)
        else:
            for arg in getattr(annotation, "__args__", ()):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    inner = target.get("items", target)
                    _default_objects(arg, inner)


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in [p for p in path.split(".") if p]:
        items = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if items:
            node = node["items"]
    return node


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _structural(_inline(raw, raw.get("$defs", {})))
    _default_objects(model, schema)
    return schema


def _strip_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


def openapi_schema() -> dict[str, Any]:
    root: dict[str, Any] = {
        "type": "object",
        "description": "ModelDeployment serves one LLM on GPUs with vLLM or Ollama and rolls out every change "
                       "as a revision (canary, blue-green or A/B), rolling back on its own when serving metrics "
                       "degrade.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "modelops.dev/v1alpha1"},
            "kind": {"type": "string", "description": "ModelDeployment"},
            "metadata": {"type": "object"},
            "spec": {**model_schema(api.ModelDeploymentSpec),
                     "description": "What to serve and how to roll out changes."},
            "status": {**_strip_defaults(model_schema(api.ModelDeploymentStatus)),
                       "description": "Observed state, written by the operator only."},
        },
    }
    for path, rules in api.CEL_RULES.items():
        _at(root, path).setdefault("x-kubernetes-validations", []).extend(rules)
    return root


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "modelops", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {"kind": api.KIND, "listKind": f"{api.KIND}List", "plural": api.PLURAL,
                      "singular": api.SINGULAR, "shortNames": api.SHORT_NAMES, "categories": ["all", "modelops"]},
            "versions": [{
                "name": api.VERSION, "served": True, "storage": True,
                # The scale subresource: `kubectl scale`, an HPA or a KEDA ScaledObject set spec.replicas (the
                # total) and read status.replicas (ready replicas serving users) and status.selector (all pods).
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                         "statusReplicasPath": ".status.replicas",
                                                         "labelSelectorPath": ".status.selector"}},
                "additionalPrinterColumns": api.PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": openapi_schema()},
            }],
        },
    }


HEADER = "# Generated by `python -m modelops.crdgen` from operator/modelops/domain/spec.py. Do not edit.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelops.crdgen", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CRD_PATH, help=f"output file (default {CRD_PATH})")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python -m modelops.crdgen", file=sys.stderr)
            return 1
        return 0
    for out in (args.out, CHART_CRD_PATH) if args.out == CRD_PATH else (args.out,):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
