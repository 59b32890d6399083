"""Name → selector class. Built-ins are lazy ``module:Class`` paths; third-party selectors come from the
entry-point group ``selbench.selectors``. A plugin that reuses a taken name is an error, not a silent override."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from selbench.selectors.base import SelectionError, Selector

ENTRY_POINT_GROUP = "selbench.selectors"
BUILTIN: dict[str, str] = {
    "random": "selbench.selectors.random:RandomSelector",
    "length": "selbench.selectors.length:LengthSelector",
    "perplexity": "selbench.selectors.perplexity:PerplexitySelector",
    "coincide": "selbench.selectors.coincide:CoincideSelector",
    "prism": "selbench.selectors.prism:PrismSelector",
    "xmas": "selbench.selectors.xmas:XmasSelector",
    "scalselect": "selbench.selectors.scalselect:ScalSelectSelector",
}


def _plugins() -> dict[str, str]:
    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            raise SelectionError(f"plugin {ep.value!r} claims the built-in selector name {ep.name!r}")
        if ep.name in found and found[ep.name] != ep.value:
            raise SelectionError(f"two plugins claim the selector name {ep.name!r}: {found[ep.name]}, {ep.value}")
        found[ep.name] = ep.value
    return found


def available() -> dict[str, str]:
    """Every registered selector name → ``module:Class``."""
    return {**BUILTIN, **_plugins()}


def load_class(path: str) -> type[Selector]:
    module, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    for needed in ("name", "Config", "needs", "score", "select"):
        if not hasattr(cls, needed):
            raise SelectionError(f"{path}: not a selector (missing {needed!r})")
    return cls  # it has the Protocol's parts (checked above)


def get_selector(name: str, config: dict[str, Any] | None = None) -> Selector:
    """Instantiate a registered selector with a validated config."""
    table = available()
    if name not in table:
        raise SelectionError(f"unknown selector {name!r}; available: {', '.join(sorted(table))}")
    cls = load_class(table[name])
    return cls(cls.Config(**(config or {})))


def instantiate(name: str, impl: str | None = None, config: dict[str, Any] | None = None) -> Selector:
    """A selector by registry name, or by an explicit ``module:Class`` (submissions, tests)."""
    if impl is None:
        return get_selector(name, config)
    cls = load_class(impl)
    return cls(cls.Config(**(config or {})))


# run inside an image: python -c DESCRIBE NAME CONFIG_JSON → one JSON line
DESCRIBE = ("import json, sys; from selbench.selectors.registry import describe; "
            "print(json.dumps(describe(sys.argv[1], json.loads(sys.argv[2])), default=str))")


def describe(name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What planning needs to know of a selector that lives only inside a container image (a submission): run
    there (``DESCRIBE``), never imported by the harness. ``error``
    names what is wrong: an unknown name, a class that is not a selector, a config its schema rejects."""
    from pydantic import ValidationError

    table = available()
    if name not in table:
        return {"name": name, "error": f"no selector {name!r} is registered in this image "
                                       f"(registered: {', '.join(sorted(table))})"}
    try:
        cls = load_class(table[name])
    except (ImportError, AttributeError, SelectionError) as e:
        return {"name": name, "error": f"{table[name]}: {type(e).__name__}: {e}"}
    out: dict[str, Any] = {"name": name, "impl": table[name], "needs": sorted(cls.needs),
                           "revision": int(getattr(cls, "revision", 1)),
                           "config_schema": cls.Config.model_json_schema()}
    try:
        cls.Config(**(config or {}))
    except ValidationError as e:
        out["error"] = f"config: {e}"
    return out

