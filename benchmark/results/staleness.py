"""Which finished runs of a store are stale: made with other code than the current, counted over
the files that can change their numbers (``benchmark.base.provenance``), read from each run's
``status.json``, ``environment.json`` and ``spec.json`` (the model it built). Used by the grid's campaign (stale runs run again) and
by ``benchmark.status`` (stale runs are shown as such)."""
from __future__ import annotations

from pathlib import Path

from benchmark.base import provenance
from benchmark.results import store


def environment_or_none(folder: Path) -> dict | None:
    """A run's environment.json, or None when it is missing or unreadable (a stale run's reason then
    names no files)."""
    try:
        return store.read_environment(folder)
    except store.StoreError:
        return None


def environment_if_changed(status: dict, folder: Path) -> dict | None:
    """A run's environment.json when its code hash differs from the current one (``is_stale`` then
    needs it to tell which files count for the run); None, unread, when the hash is the current one."""
    return None if status.get("code_hash") == provenance.code_hash() else environment_or_none(folder)


def model_or_none(folder: Path) -> str | None:
    """The preset a run built (its spec.json ``model``), or None when the spec is missing or
    unreadable (then every model family's file counts for it)."""
    try:
        return (store.read_spec(folder) or {}).get("model")
    except store.StoreError:
        return None


def is_stale(status: dict, folder: Path) -> bool:
    """Whether the run in ``folder`` (its ``status``) is finished and stale."""
    environment = environment_if_changed(status, folder)
    return provenance.is_stale(status, environment, model_or_none(folder) if environment else None)


def reason(status: dict, folder: Path) -> str:
    """Why a stale run is stale (its code against the current, the files that changed)."""
    return provenance.stale_reason(status, environment_or_none(folder), model_or_none(folder))
