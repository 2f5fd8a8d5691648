"""Removing clusters: their system images saved first, then every labelled object.

Every removal goes through here: a handle's ``stop()``, the end of a run, the
sweep of leftovers, ``python -m pytest_k3s rm``, a reusable cluster found
broken. The engine removes by label, so a half-made cluster goes too; only
what carries our labels is ever removed.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence

from pytest_k3s.engine.protocol import Engine
from pytest_k3s.lifecycle import image_cache


def remove_clusters(
    engine: Engine,
    names: Sequence[str],
    *,
    save_images: bool,
    report: Callable[[str], None] | None = None,
) -> None:
    """Remove the clusters ``names``, saving their system images first if asked.

    Saving is what a cluster that ends normally does (a later cluster of the
    same image then pulls nothing); leftovers, interrupted runs and broken
    clusters skip it. Whatever happens while saving (a second Ctrl-C, say),
    every cluster is still removed.
    """
    try:
        for name in names if save_images else ():
            saved = image_cache.save(engine, name)
            if saved and report is not None:
                report(
                    f"k3s cluster {name}: saved {len(saved)} system image(s) "
                    "for later clusters (--k3s-image-cache)"
                )
    finally:
        for name in names:
            engine.remove_cluster(name)
