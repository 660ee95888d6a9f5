"""The route table: which endpoints a message goes to, at which priority, until when.

Pure (no I/O). Ingress calls :meth:`RouteTable.deliveries` for every message and hands the result
to ``MessageStore.put_batch``; the hub rebuilds the table with :meth:`RouteTable.from_desired`
when ``$edgeHub`` desired properties change (messages already stored keep the priority and
expiry they were stored with, as in edgeHub).

Semantics (iotedge ``doc/Route_priority_and_TTL.md``):

- string routes have priority 2,000,000,000 (the lowest); object routes 0..9, 0 first;
- a route's ``timeToLiveSecs`` overrides ``storeAndForwardConfiguration.timeToLiveSecs``; 0 or
  absent means "use the global value" (edgeHub's ``StoringAsyncEndpointExecutor`` does the same);
- when several routes send one message to one endpoint, it is delivered once, with the highest
  priority (lowest number) and the longest TTL among them.

Speed: routes are grouped per source ``(module, output)`` on first sight, so a message costs a
dict lookup plus the WHERE conditions of the routes that can take it; the body is decoded only if a
condition reads ``$body``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from outpost.hub.endpoint import Endpoint
from outpost.hub.store import Delivery
from outpost.lang import ModuleInputSink, Route, RoutingMessage, parse_route
from outpost.manifest.models import EdgeHubDesired, RouteSpec
from outpost.wire.message import Message

__all__ = ["CompiledRoute", "RouteTable", "endpoint_of"]

_CACHE_LIMIT: Final = 4096  # distinct (module, output) sources remembered; cleared when exceeded


def endpoint_of(route: Route) -> str:
    """The store endpoint a route's sink names: ``module:M/INPUT`` or ``upstream``."""
    sink = route.sink
    if isinstance(sink, ModuleInputSink):
        return str(Endpoint.module_input(sink.module, sink.input))
    return str(Endpoint.upstream())


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """One route as the table uses it: the parsed route, its endpoint, priority and TTL (seconds)."""

    name: str
    route: Route
    endpoint: str
    priority: int
    ttl_secs: float


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a source's messages need: deliveries that always apply, and conditional routes."""

    fixed: tuple[tuple[str, int, float], ...]  # merged (endpoint, priority, ttl) of unconditional routes
    conditional: tuple[CompiledRoute, ...]


_NOTHING: Final = _Plan((), ())


class RouteTable:
    """Compiled routes; :meth:`deliveries` is safe to call from several threads at once."""

    __slots__ = ("_plans", "routes")

    def __init__(self, routes: list[CompiledRoute]) -> None:
        self.routes: tuple[CompiledRoute, ...] = tuple(routes)
        self._plans: dict[tuple[str | None, str | None], _Plan] = {}

    @classmethod
    def from_desired(cls, hub: EdgeHubDesired) -> RouteTable:
        """Compile every route of ``$edgeHub`` desired properties; raises QueryError for a bad route."""
        return cls.from_specs(hub.route_specs(), default_ttl_secs=hub.store_and_forward_configuration.time_to_live_secs)

    @classmethod
    def from_specs(cls, specs: Mapping[str, RouteSpec], *, default_ttl_secs: float) -> RouteTable:
        """Compile routes in object form; ``default_ttl_secs`` is the global store-and-forward TTL."""
        compiled = []
        for name, spec in specs.items():
            route = parse_route(spec.route)
            ttl = spec.time_to_live_secs or default_ttl_secs
            compiled.append(CompiledRoute(name, route, endpoint_of(route), spec.priority, float(ttl)))
        return cls(compiled)

    def endpoints(self) -> list[str]:
        """Every endpoint some route can deliver to (the pumps the hub needs), sorted."""
        return sorted({route.endpoint for route in self.routes})

    def deliveries(self, message: Message, now: float) -> list[Delivery]:
        """Where ``message`` goes: one Delivery per endpoint, [] when no route takes it."""
        key = (message.source_module, message.output)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(*key)
        if not plan.conditional:
            return [Delivery(endpoint, priority, now + ttl) for endpoint, priority, ttl in plan.fixed]
        merged: dict[str, tuple[int, float]] = {endpoint: (priority, ttl) for endpoint, priority, ttl in plan.fixed}
        view: RoutingMessage | None = None
        for compiled in plan.conditional:
            if view is None:
                view = message.routing_view()
            condition = compiled.route.condition
            if condition is not None and not condition.evaluate(view):
                continue
            _merge(merged, compiled.endpoint, compiled.priority, compiled.ttl_secs)
        return [Delivery(endpoint, priority, now + ttl) for endpoint, (priority, ttl) in merged.items()]

    def _plan(self, module: str | None, output: str | None) -> _Plan:
        fixed: dict[str, tuple[int, float]] = {}
        conditional = []
        for compiled in self.routes:
            if not compiled.route.source.matches(module_id=module, output=output):
                continue
            if compiled.route.condition is None:
                _merge(fixed, compiled.endpoint, compiled.priority, compiled.ttl_secs)
            else:
                conditional.append(compiled)
        plan = (
            _Plan(tuple((e, p, t) for e, (p, t) in fixed.items()), tuple(conditional))
            if fixed or conditional
            else _NOTHING
        )
        if len(self._plans) >= _CACHE_LIMIT:
            self._plans.clear()  # a flood of distinct outputs must not grow memory without bound
        self._plans[(module, output)] = plan
        return plan


def _merge(merged: dict[str, tuple[int, float]], endpoint: str, priority: int, ttl: float) -> None:
    """Keep one delivery per endpoint: the highest priority (lowest number) and the longest TTL."""
    seen = merged.get(endpoint)
    if seen is None:
        merged[endpoint] = (priority, ttl)
    else:
        merged[endpoint] = (min(seen[0], priority), max(seen[1], ttl))
