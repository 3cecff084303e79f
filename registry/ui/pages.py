"""The UI's routes under ``/ui`` (docs/ui.md): server-rendered pages, htmx partials, and the one
action, a rollback.

Each handler reads what its page needs — the registry service directly, the event index, the
optional outside readers of :mod:`registry.ui.sources` and the panels of
:mod:`registry.ui.panels` — turns it into view models (:mod:`registry.ui.model`) and renders a
template.  A request made by htmx for a part of a page (``HX-Request`` with ``HX-Target``
naming it) gets that part alone; every other request gets the whole page, so that every page
reads without JavaScript.

Access: every page is readable without a token, except what the registry API protects with
``FP_READ_TOKENS`` (the event log, rejected events' payloads).  A person signs in by pasting a
token once; it is kept in an HttpOnly, ``SameSite=Strict`` cookie scoped to ``/ui`` and
checked against the app's :class:`~registry.api.app.Gate` on every request, as the API's
bearer tokens are.  A rollback needs a write token, a confirmation (the view's name typed
again) and a form token derived from the signed-in token that no other site can know, and
is refused when the browser says it comes from another site.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie, ResponseHeader
from litestar.enums import MediaType, RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Body, QueryParameter
from litestar.plugins.htmx import HTMXRequest
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from core.domain.definitions import (
    Definition,
    FeatureView,
    Kind,
    definition_key,
    parse_definition,
)
from core.domain.events import Provenance
from core.domain.layout import encode_entity_key, namespace_of, view_join_keys
from core.domain.validation import references
from core.errors import (
    AuthenticationError,
    FeaturePlatformError,
    ForbiddenError,
    InfrastructureError,
)
from registry.api.app import MAX_VERSION, DefinitionName, Gate
from registry.service import RegistryService
from registry.store.base import DefinitionRecord
from registry.ui import model
from registry.ui.index import EventIndex
from registry.ui.panels import (
    BackfillCoverage,
    DriftReport,
    DriftStatus,
    FeatureDrift,
    NotAvailable,
)
from registry.ui.registry_panels import EventLogBackfills
from registry.ui.sources import IngestCounts, LiveReader, ProgressReader, TopicTail
from sinks.compiler import KafkaOptions, compile_view, dlq_topic

HERE = Path(__file__).parent
Query = Annotated[str, QueryParameter()]
"""A text query parameter (a filter, a form field): empty when absent."""
COOKIE = "fp_ui_token"
COOKIE_MAX_AGE_S = 8 * 3600
EVENTS_PAGE = 100
DEAD_LETTERS_READ = 2_000
"""Dead letters read back per source page: the most recent, a bounded sample."""
SECURITY_HEADERS = [
    # htmx is a file of our own origin and no page has inline script or style: nothing else
    # may run, load, frame the pages or receive a form.
    ResponseHeader(name="Content-Security-Policy", value=(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the signed-in token's identity and what it may do."""

    identity: str | None
    can_write: bool
    can_read_protected: bool
    csrf: str = ""
    """The form token of this sign-in."""


def csrf_token(token: str) -> str:
    """A value only the holder of ``token`` can compute: a page from another site cannot put
    it in a form it posts."""
    return hmac.new(token.encode(), b"fp-ui-form", hashlib.sha256).hexdigest()


def _html_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    if isinstance(error, FeaturePlatformError):
        status, title, detail = error.status, error.title, str(error)
    elif isinstance(error, HTTPException):
        status, title, detail = error.status_code, "Request refused", str(error.detail)
    else:  # pragma: no cover - Litestar only routes the two classes here
        raise error
    engine = request.app.template_engine
    assert engine is not None, "the UI's app has its template engine"
    body = engine.get_template("error.html").render(status=status, title=title, detail=detail,
                                                    viewer=None, path=request.url.path)
    return Response(body, status_code=status, media_type=MediaType.HTML,
                    headers={h.name: h.value or "" for h in SECURITY_HEADERS})


@dataclass
class RegistryUI:
    """The web UI as a component of the registry's app (``create_registry_app(pages=…)``).

    Only ``service`` is required; each other reader fills one panel and, when missing, the
    panel names the setting it needs."""

    service: RegistryService
    progress: ProgressReader | None = None
    live: LiveReader | None = None
    dead_letters: TopicTail | None = None
    ingest: IngestCounts | None = None
    backfills: BackfillCoverage | None = None
    """None: the registry's own, read from its event log."""
    drift: DriftStatus | None = None
    """None: the panel says that the registry has no drift store."""
    kafka_bootstrap: str | None = None
    """Shown in the generated SQL as the jobs get it."""
    clock: Callable[[], int] = now_ms

    _COMPILED_KEPT = 256

    def __post_init__(self) -> None:
        self.index = EventIndex(self.service.store)
        self._rows_at = self._users_at = -1
        self._rows: list[model.DefinitionRow] = []
        self._users: dict[str, list[model.DefinitionRow]] = {}
        self._compiled: dict[tuple[str, int], tuple[int, list[str]]] = {}

    @property
    def template_config(self) -> TemplateConfig[JinjaTemplateEngine]:
        environment = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            # Everything a definition, an event or a dead letter holds is someone's input:
            # every value is escaped, in every template, whatever its file name.
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        environment.globals.update(duration=model.duration_text, moment=model.moment_text,
                                   ms_moment=model.ms_text, kind_paths=model.KIND_PATHS,
                                   kind_labels=model.KIND_LABELS, page_path=model.page_path,
                                   histogram=_histogram)
        environment.tests["not_available"] = lambda value: isinstance(value, NotAvailable)
        return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))

    # ------------------------------------------------------------------ reads

    def _definition_rows(self) -> list[model.DefinitionRow]:
        """Every definition's overview row, rebuilt only when the log moved."""
        self.index.refresh()
        position = self.index.position
        if position != self._rows_at:
            newest = self.index.newest_deployments()
            self._rows = [model.definition_row(
                r.kind, r.name, r.spec, latest=r.latest_version, active=r.active_version,
                deployment=newest.get(r.name) if r.kind == Kind.FEATURE_VIEW else None)
                          for r in self.service.store.definitions()]
            self._rows_at = position
        return self._rows

    def _users_of(self, kind: Kind, name: str) -> list[model.DefinitionRow]:
        """The definitions whose latest version references this one; the map is rebuilt
        only when the log moved (it parses every definition)."""
        self.index.refresh()
        if self.index.position != self._users_at:
            users: dict[str, list[model.DefinitionRow]] = {}
            for record in self.service.store.definitions():
                try:
                    referenced = references(parse_definition(dict(record.spec)))
                except FeaturePlatformError:  # registered before a rule it breaks existed
                    continue
                row = model.definition_row(
                    record.kind, record.name, record.spec, latest=record.latest_version,
                    active=record.active_version, deployment=None)
                for key in referenced:
                    users.setdefault(key, []).append(row)
            self._users, self._users_at = users, self.index.position
        return self._users.get(f"{kind.value}:{name}", [])

    def _catalog_for(self, view: FeatureView) -> dict[str, Definition]:
        """The view and the latest version of what it references, as the deployer compiles."""
        catalog: dict[str, Definition] = {definition_key(view): view}
        for key in references(view):
            kind, name = key.split(":", 1)
            record = self.service.store.definition(kind, name)
            if record is not None:
                catalog[key] = parse_definition(dict(record.spec))
        return catalog

    def _sql(self, name: str, version: int) -> list[str]:
        """A version's job as the deployer would compile it now; kept until the registry
        changes (a new source or entity version changes it), as a diff is read again and
        again while the log stands still."""
        compiled = self._compiled.get((name, version))
        if compiled is not None and compiled[0] == self.index.position:
            return compiled[1]
        view = parse_definition(dict(self.service.version(Kind.FEATURE_VIEW, name,
                                                          version).spec))
        assert isinstance(view, FeatureView)
        job = compile_view(view, self._catalog_for(view), namespace_of(version), version,
                           kafka=KafkaOptions(self.kafka_bootstrap or "${FP_KAFKA_BOOTSTRAP}"))
        if len(self._compiled) >= self._COMPILED_KEPT:
            self._compiled.clear()
        self._compiled[(name, version)] = (self.index.position, list(job.statements))
        return list(job.statements)

    def _viewer(self, request: Request[Any, Any, Any], gate: Gate) -> Viewer:
        token = request.cookies.get(COOKIE)
        if token:
            for check, can_write in ((gate.writer, gate.writes_need_token), (gate.reader, False)):
                try:
                    identity = check(token)
                except AuthenticationError:
                    continue
                return Viewer(identity, can_write, True, csrf_token(token))
        return Viewer(None, False, not gate.reads_need_token)

    def _namespaces(self, name: str, active: int | None) -> list[model.NamespaceRow] | str:
        if self.progress is None:
            return "not configured: set FP_REDIS_URL (the online store) for the registry"
        history = self.index.history(name)
        deployments = history.newest_first()
        progress = {}
        try:
            for namespace in model.live_namespaces(deployments, history.purged):
                found = self.progress.progress(name, namespace)
                progress[namespace] = (found.watermark, found.rows, found.updated_at_ms)
        except InfrastructureError as error:
            return str(error)
        return model.namespace_rows(deployments, history.purged, active, progress, self.clock())

    def _drift(self, name: str) -> DriftReport | NotAvailable:
        if self.drift is None:
            return NotAvailable("not configured: the registry was built without the drift "
                                "monitor's store (registry/bootstrap.py passes it)")
        return self.drift.drift(name)

    # ------------------------------------------------------------------ routes

    def router(self, gate: Gate) -> Router:  # noqa: PLR0915 - one closure per route
        ui = self

        def page(request: HTMXRequest, template: str, part: str | None = None,
                 status_code: int = 200, **context: Any) -> Template:
            """The whole page, or only ``part`` when htmx asked for the element of that id."""
            viewer = context.pop("viewer", None) or ui._viewer(request, gate)
            wanted = request.htmx.target if request.htmx else None
            name = part if part is not None and wanted == part.removeprefix("_").split(".")[0] \
                else template
            return Template(template_name=name, status_code=status_code,
                            context={**context, "viewer": viewer, "path": request.url.path,
                                     "gate": gate})

        @get("/", sync_to_thread=True)
        def overview(request: HTMXRequest, q: Query = "", owner: Query = "", tag: Query = "",
                     kind: Query = "") -> Template:
            search = model.Search(q, owner, tag, kind if kind in model.KIND_LABELS else "")
            return page(request, "overview.html", "_results.html",
                        overview=model.overview(ui._definition_rows(), search))

        @get("/feature-views/{name:str}", sync_to_thread=True)
        def feature_view(request: HTMXRequest, name: DefinitionName) -> Template:
            record = ui.service.definition(Kind.FEATURE_VIEW, name)
            ui.index.refresh()
            history = ui.index.history(name)
            view = parse_definition(dict(record.spec))
            assert isinstance(view, FeatureView)
            catalog = ui._catalog_for(view)
            return page(
                request, "feature_view.html", record=record, view=view, spec=record.spec,
                join_keys=_join_keys(view, catalog), versions=_versions(ui, record),
                timeline=model.timeline(history.newest_first(), history.rollbacks),
                namespaces=ui._namespaces(name, record.active_version),
                coverage=(ui.backfills or EventLogBackfills(ui.service.store)).coverage(name),
                drift=ui._drift(name))

        @get("/feature-views/{name:str}/timeline", sync_to_thread=True)
        def deployment_timeline(request: HTMXRequest, name: DefinitionName) -> Template:
            record = ui.service.definition(Kind.FEATURE_VIEW, name)
            ui.index.refresh()
            history = ui.index.history(name)
            return page(request, "_timeline.html", record=record,
                        timeline=model.timeline(history.newest_first(), history.rollbacks),
                        namespaces=ui._namespaces(name, record.active_version))

        def diff_page(request: HTMXRequest, kind: Kind, name: str, old: int | None,
                      new: int | None) -> Template:
            record = ui.service.definition(kind, name)
            old = old or max(1, record.latest_version - 1)
            new = new or record.latest_version
            diff = ui.service.diff(kind, name, old, new)
            old_sql = new_sql = None
            problem = None
            if kind is Kind.FEATURE_VIEW:
                try:
                    old_sql, new_sql = ui._sql(name, old), ui._sql(name, new)
                except FeaturePlatformError as error:
                    problem = f"no SQL: {error}"
            view = model.diff_view(old, new, diff.change_class.value if diff.change_class
                                   else None, diff.diff, old_sql=old_sql, new_sql=new_sql,
                                   sql_problem=problem)
            return page(request, "diff.html", record=record, diff=view,
                        versions=list(range(record.latest_version, 0, -1)))

        def diff_route(kind: Kind) -> HTTPRouteHandler:
            @get(f"/{model.KIND_PATHS[kind]}/{{name:str}}/diff", sync_to_thread=True)
            def diff(request: HTMXRequest, name: DefinitionName,
                     old: Annotated[int | None, QueryParameter(name="from", ge=1,
                                                               le=MAX_VERSION)] = None,
                     new: Annotated[int | None, QueryParameter(name="to", ge=1,
                                                               le=MAX_VERSION)] = None,
                     ) -> Template:
                return diff_page(request, kind, name, old, new)

            return diff

        @get("/feature-views/{name:str}/live", sync_to_thread=True)
        def live(request: HTMXRequest, name: DefinitionName, version: Query = "") -> Template:
            # The form's "active" choice sends an empty version.
            pinned = _version_field(version) if version else None
            record = ui.service.definition(Kind.FEATURE_VIEW, name)
            view = parse_definition(dict(record.spec))
            assert isinstance(view, FeatureView)
            keys = _join_keys(view, ui._catalog_for(view))
            values = {key: request.query_params.get(key, "") for key in keys}
            answer: model.LiveValues | None = None
            problem = None
            if ui.live is None:
                problem = "not configured: set FP_SERVING_URL (the serving API) for the registry"
            elif all(values.values()):
                entity_key = encode_entity_key([values[k] for k in keys])
                try:
                    answer = model.live_values(ui.live.features(name, entity_key, pinned),
                                               ui.clock())
                except FeaturePlatformError as error:
                    problem = str(error)
            refresh = "?" + urlencode({**values, **({"version": pinned} if pinned else {})})
            return page(request, "live.html", "_live.html", record=record, keys=keys,
                        values=values, version=pinned, answer=answer, problem=problem,
                        refresh=refresh, checked_at=ui.clock(),
                        versions=list(range(record.latest_version, 0, -1)))

        @get("/feature-views/{name:str}/rollback", sync_to_thread=True)
        def confirm_rollback(request: HTMXRequest, name: DefinitionName,
                             to: Annotated[int, QueryParameter(ge=1, le=MAX_VERSION)]
                             ) -> Template:
            viewer = ui._viewer(request, gate)
            record = ui.service.definition(Kind.FEATURE_VIEW, name)
            ui.service.version(Kind.FEATURE_VIEW, name, to)
            return page(request, "rollback.html", viewer=viewer, record=record, to=to,
                        problem=None)

        @post("/feature-views/{name:str}/rollback", sync_to_thread=True, status_code=303)
        def rollback(request: HTMXRequest, name: DefinitionName, data: Annotated[
                dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
                ) -> Redirect | Template:
            _same_site(request)
            viewer = ui._viewer(request, gate)
            if not viewer.can_write:
                raise ForbiddenError("rolling back needs a sign-in with a write token"
                                     if gate.writes_need_token else
                                     "this registry has no write tokens (FP_API_TOKENS): "
                                     "the UI takes no actions")
            if not hmac.compare_digest(data.get("csrf", ""), viewer.csrf):
                raise ForbiddenError("the form is not from this sign-in: reload the page")
            to = _version_field(data.get("to_version", ""))
            record = ui.service.definition(Kind.FEATURE_VIEW, name)
            if data.get("confirm", "").strip() != name:
                return page(request, "rollback.html", viewer=viewer, record=record, to=to,
                            problem=f"type the view's name, {name}, to confirm",
                            status_code=200)
            assert viewer.identity is not None
            gate.spend_write(viewer.identity)
            ui.service.request_rollback(name, to, Provenance(
                actor=viewer.identity, message=f"rollback to v{to} from the UI"))
            return Redirect(f"/ui/feature-views/{name}#timeline", status_code=303)

        def definition_route(kind: Kind) -> HTTPRouteHandler:
            @get(f"/{model.KIND_PATHS[kind]}/{{name:str}}", sync_to_thread=True)
            def definition(request: HTMXRequest, name: DefinitionName) -> Template:
                record = ui.service.definition(kind, name)
                quality = _quality(ui, record, ui._viewer(request, gate)) \
                    if kind is Kind.SOURCE else None
                return page(request, "definition.html", record=record, spec=record.spec,
                            versions=_versions(ui, record), quality=quality,
                            users=ui._users_of(kind, name))

            return definition

        @get("/events", sync_to_thread=True)
        def events(request: HTMXRequest, type: Query = "", subject: Query = "", actor: Query = "",
                   before: Annotated[int | None, QueryParameter(ge=1)] = None) -> Template:
            viewer = ui._viewer(request, gate)
            if not viewer.can_read_protected:
                raise AuthenticationError("the event log needs a read or write token: sign in")
            ui.index.refresh()
            search = model.EventSearch(type, subject, actor)
            rows = ui.index.rows()
            shown: list[model.EventRow] = []
            for row in reversed(rows):
                if before is not None and row.position >= before:
                    continue
                if search.matches(row):
                    shown.append(row)
                    if len(shown) > EVENTS_PAGE:
                        break
            older = shown[EVENTS_PAGE - 1].position if len(shown) > EVENTS_PAGE else None
            return page(request, "events.html", "_events.html", viewer=viewer,
                        rows=shown[:EVENTS_PAGE], search=search, older=older,
                        types=sorted(ui.index.types), actors=sorted(ui.index.actors))

        @get("/sign-in", sync_to_thread=False)
        def sign_in_form(request: HTMXRequest, next: Query = "/ui") -> Template:
            return page(request, "sign_in.html", next=_local(next), problem=None)

        @post("/sign-in", sync_to_thread=False, status_code=303)
        def sign_in(request: HTMXRequest, data: Annotated[
                dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
                ) -> Redirect | Template:
            _same_site(request)
            token = data.get("token", "").strip()
            try:
                gate.reader(token)
            except AuthenticationError:
                return page(request, "sign_in.html", next=_local(data.get("next", "/ui")),
                            problem="that token is not one of this registry's",
                            status_code=200)
            redirect = Redirect(_local(data.get("next", "/ui")), status_code=303)
            redirect.set_cookie(Cookie(key=COOKIE, value=token, path="/ui", httponly=True,
                                       samesite="strict", max_age=COOKIE_MAX_AGE_S,
                                       secure=request.url.scheme == "https"))
            return redirect

        @post("/sign-out", sync_to_thread=False, status_code=303)
        def sign_out(request: HTMXRequest) -> Redirect:
            _same_site(request)
            redirect = Redirect("/ui", status_code=303)
            redirect.delete_cookie(COOKIE, path="/ui")
            return redirect

        static = create_static_files_router(
            "/static", directories=[HERE / "static"], name="ui-static",
            cache_control=None, include_in_schema=False)
        return Router(
            path="/ui", request_class=HTMXRequest, include_in_schema=False,
            response_headers=SECURITY_HEADERS,
            exception_handlers={FeaturePlatformError: _html_error, HTTPException: _html_error},
            route_handlers=[overview, feature_view, deployment_timeline, live, confirm_rollback,
                            rollback, events, sign_in_form, sign_in, sign_out, static,
                            *(diff_route(kind) for kind in Kind),
                            *(definition_route(kind) for kind in Kind
                              if kind is not Kind.FEATURE_VIEW)])


# --------------------------------------------------------------------------- helpers

def _histogram(version: int, feature: FeatureDrift) -> model.HistogramChart:
    return model.histogram_chart(
        f"v{version} {feature.feature}: baseline and live shares of values in "
        f"{len(feature.bins)} bins", feature.bins,
        "category" if feature.kind == "categorical" else "value")


def _version_field(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_VERSION:
        raise FeaturePlatformError(f"{text!r} is not a version number")
    return int(text)


def _local(path: str) -> str:
    """``path`` when it stays in the UI; ``/ui`` otherwise (no redirect to another site)."""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui"):
        return "/ui"
    return path


def _same_site(request: Request[Any, Any, Any]) -> None:
    """Refuse an action a browser says another site sent.  The cookie is ``SameSite=Strict``
    and the form carries :func:`csrf_token` already; this is the third lock."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site not in (None, "same-origin", "none") or (
            origin is not None and urlsplit(origin).netloc != request.headers.get("host")):
        raise ForbiddenError("this action must be sent from the registry's own pages")


def _join_keys(view: FeatureView, catalog: Mapping[str, Definition]) -> list[str]:
    try:
        return list(view_join_keys(view, catalog))
    except (KeyError, AssertionError):  # an entity that is not registered (any more)
        return []


def _versions(ui: RegistryUI, record: DefinitionRecord) -> list[model.VersionRow]:
    return model.version_rows(
        ((v.version, v.change_class, v.provenance, v.registered_at)
         for v in ui.service.store.versions(record.kind, record.name)), record.active_version)


@dataclass(frozen=True)
class Quality:
    """A source's data quality panel."""

    topic: str
    rejections: model.Rejections | None
    rejections_problem: str | None
    ingest: dict[str, dict[str, int]] | None
    ingest_problem: str | None
    payloads_shown: bool


def _quality(ui: RegistryUI, record: DefinitionRecord, viewer: Viewer) -> Quality:
    source = parse_definition(dict(record.spec))
    topic = dlq_topic(source)  # type: ignore[arg-type]
    rejections = ingest = None
    rejections_problem = ingest_problem = None
    if ui.dead_letters is None:
        rejections_problem = "not configured: set FP_KAFKA_BOOTSTRAP for the registry"
    else:
        try:
            letters = [model.dead_letter(value, at)
                       for at, value in ui.dead_letters.tail(topic, DEAD_LETTERS_READ)]
            rejections = model.rejections(letters)
        except InfrastructureError as error:
            rejections_problem = str(error)
    if ui.ingest is None:
        ingest_problem = "not configured: set FP_INGEST_URL for the registry"
    else:
        try:
            ingest = ui.ingest.counts(record.name)
        except FeaturePlatformError as error:
            ingest_problem = str(error)
    return Quality(topic, rejections, rejections_problem, ingest, ingest_problem,
                   viewer.can_read_protected)
