"""The CRD is generated from the models and must be committed up to date."""

from pathlib import Path

import yaml

from modelops import crdgen

ROOT = Path(__file__).resolve().parents[3]


def test_crd_file_is_not_stale() -> None:
    committed = (ROOT / crdgen.CRD_PATH).read_text()
    assert committed == crdgen.render(), "crds/ is stale: run `python -m modelops.crdgen` and commit the result"


def _walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_schema_is_structural() -> None:
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        if isinstance(node, dict) and ("properties" in node or "items" in node):
            assert "type" in node, f"{path} has no type"
            assert not {"$ref", "anyOf", "oneOf", "allOf", "title"} & node.keys(), path


def test_printer_columns_and_names() -> None:
    crd = yaml.safe_load((ROOT / crdgen.CRD_PATH).read_text().split("\n", 1)[1])
    version = crd["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Model", "Engine", "Phase", "Stable", "Canary", "Weight", "Ready", "Age"]
    assert crd["spec"]["names"]["shortNames"] == ["md", "mdep"]
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}}


def test_reference_doc_is_not_stale() -> None:
    from modelops import docgen

    assert (ROOT / docgen.OUT).read_text() == docgen.render(), \
        "docs/reference.md is stale: run `python -m modelops.docgen` and commit the result"
