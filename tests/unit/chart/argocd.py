"""Run Argo CD's Lua customizations as Argo CD does: Lua 5.1 (gopher-lua there, PUC Lua 5.1
via lupa here), a fresh state per call, the object as the global ``obj``, and Argo CD's
sandbox: base and table libraries only (no string, os, io, require or file loading,
and no string methods), unless ``useOpenLibs`` is set, which we never rely on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from lupa import lua51

CM = Path(__file__).resolve().parents[3] / "charts" / "modelops" / "argocd" / "argocd-cm.yaml"
HEALTH_KEY = "resource.customizations.health.modelops.dev_ModelDeployment"
ACTIONS_KEY = "resource.customizations.actions.modelops.dev_ModelDeployment"
REMOVED = ("os", "io", "require", "dofile", "loadfile", "load", "loadstring", "debug", "package", "module",
           "string", "collectgarbage", "newproxy", "getfenv", "setfenv", "rawequal", "coroutine")


def customizations() -> dict[str, str]:
    return yaml.safe_load(CM.read_text())["data"]


def health_script() -> str:
    return customizations()[HEALTH_KEY]


def actions() -> dict[str, Any]:
    return yaml.safe_load(customizations()[ACTIONS_KEY])


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        t = lua.table()
        for k, v in value.items():
            if v is not None:
                t[k] = _to_lua(lua, v)
        return t
    if isinstance(value, list):
        t = lua.table()
        for i, v in enumerate(value, start=1):
            t[i] = _to_lua(lua, v)
        return t
    return value


def _from_lua(value: Any) -> Any:
    if lua51.lua_type(value) == "table":
        keys = list(value.keys())
        if keys and all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
            return [_from_lua(value[k]) for k in sorted(keys)]
        return {k: _from_lua(value[k]) for k in keys}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def run(script: str, obj: dict[str, Any]) -> Any:
    """Execute one script against ``obj``; return what it returns, as Python values."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False, register_builtins=False)
    compiled = lua.globals().loadstring(script)
    if compiled is None:
        raise SyntaxError(f"Lua does not compile:\n{script}")
    g = lua.globals()
    lua.execute('getmetatable("").__index = nil')  # no ("x"):format() without the string library
    for name in REMOVED:
        g[name] = None
    g.obj = _to_lua(lua, obj)
    return _from_lua(compiled())


def health(obj: dict[str, Any]) -> dict[str, str]:
    return run(health_script(), obj)


def discover(obj: dict[str, Any]) -> dict[str, Any]:
    return run(actions()["discovery.lua"], obj)


def act(name: str, obj: dict[str, Any]) -> dict[str, Any]:
    (definition,) = [d for d in actions()["definitions"] if d["name"] == name]
    return run(definition["action.lua"], obj)
