"""The scheduler's PodTopologySpread filter, as a pure function."""

from __future__ import annotations

from typing import Any

from k3s_double.controllers.scheduling import spread_misfit


def node(name: str, **labels: str) -> dict[str, Any]:
    tags = {"kubernetes.io/hostname": name, **labels}
    return {"metadata": {"name": name, "labels": tags}, "spec": {}}


def pod(name: str, on: str | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": name,
            "labels": {"app": "web"},
        },
        "spec": {"nodeName": on, **spec} if on else dict(spec),
    }


NODES = [node("a", disk="ssd"), node("b", disk="ssd"), node("c")]
SPREAD = {
    "maxSkew": 1,
    "topologyKey": "kubernetes.io/hostname",
    "whenUnsatisfiable": "DoNotSchedule",
    "labelSelector": {"matchLabels": {"app": "web"}},
}


def test_a_node_that_would_exceed_the_skew_does_not_fit() -> None:
    new = pod("new", topologySpreadConstraints=[SPREAD])
    placed = [pod("one", on="a")]
    assert spread_misfit(new, NODES[0], NODES, placed, {})
    assert not spread_misfit(new, NODES[1], NODES, placed, {})


def test_pods_bound_in_the_same_pass_count() -> None:
    new = pod("new", topologySpreadConstraints=[SPREAD])
    earlier = [pod("one"), pod("two")]
    assert spread_misfit(new, NODES[0], NODES, earlier, {"one": "a"})
    assert not spread_misfit(new, NODES[2], NODES, earlier, {"one": "a", "two": "b"})


def test_only_the_nodes_the_selector_allows_are_domains() -> None:
    new = pod("new", topologySpreadConstraints=[SPREAD], nodeSelector={"disk": "ssd"})
    placed = [pod("one", on="a"), pod("two", on="b")]
    # c (no ssd) holds none, but is no domain of this pod: a again is fine.
    assert not spread_misfit(new, NODES[0], NODES, placed, {})


def test_schedule_anyway_and_other_pods_do_not_constrain() -> None:
    lenient = pod(
        "new",
        topologySpreadConstraints=[{**SPREAD, "whenUnsatisfiable": "ScheduleAnyway"}],
    )
    crowded = [pod("one", on="a"), pod("two", on="a")]
    assert not spread_misfit(lenient, NODES[0], NODES, crowded, {})
    other = pod("other", on="a")
    other["metadata"]["labels"] = {"app": "db"}
    strict = pod("new", topologySpreadConstraints=[SPREAD])
    assert not spread_misfit(strict, NODES[0], NODES, [other, other], {})


def test_a_node_without_the_key_is_no_domain() -> None:
    keyless = {"metadata": {"name": "d", "labels": {}}, "spec": {}}
    new = pod("new", topologySpreadConstraints=[SPREAD])
    assert spread_misfit(new, keyless, [*NODES, keyless], [], {})


def test_fewer_domains_than_min_domains_count_as_a_minimum_of_zero() -> None:
    two = NODES[:2]
    placed = [pod("one", on="a"), pod("two", on="b")]
    new = pod("new", topologySpreadConstraints=[{**SPREAD, "minDomains": 3}])
    assert spread_misfit(new, NODES[0], two, placed, {})
    plain = pod("new", topologySpreadConstraints=[SPREAD])
    assert not spread_misfit(plain, NODES[0], two, placed, {})
