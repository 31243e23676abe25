"""What the kopf handlers ask of kopf: server-side filtered watches, and no change detection."""

from __future__ import annotations

import kopf
import pytest
from kopf._cogs.structs.references import Resource

from modelops.handlers import modeldeployment

pytestmark = pytest.mark.unit


def test_owned_kinds_are_watched_through_server_side_selectors() -> None:
    settings = kopf.OperatorSettings()
    modeldeployment.watch_selectors(settings)

    def selectors(group: str, plural: str) -> tuple[list[str], list[str]]:
        r = Resource(group, "v1", plural)
        return list(settings.watching.label_selectors.collect(r)), list(settings.watching.field_selectors.collect(r))

    owned = "app.kubernetes.io/managed-by=modelops,modelops.dev/deployment"
    assert selectors("", "pods") == ([owned], ["spec.nodeName="])  # unbound pods only
    assert selectors("apps", "deployments") == ([owned], [])
    assert selectors("", "services") == ([owned], [])
    assert selectors("gateway.networking.k8s.io", "httproutes") == ([owned], [])
    assert selectors("", "configmaps") == ([], [])  # not watched: written, never read


def test_the_operator_has_no_change_handlers_so_kopf_keeps_no_diff_base() -> None:
    """The diff-base storage keeps nothing (building one deep-copies every event's body): right
    only while no handler reacts to changes (on.create/update/field)."""
    assert kopf.get_default_registry()._changing.get_all_handlers() == []  # noqa: SLF001 - what kopf asks
    storage = modeldeployment.NoDiffBase()
    assert storage.build(body=kopf.Body({"spec": {"a": 1}})) == {} and storage.fetch(body=kopf.Body({})) is None
