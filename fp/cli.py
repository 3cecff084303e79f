"""The ``fp`` command (docs/reference.md, "Commands")."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol

from core.errors import FeaturePlatformError, InvalidDefinitionError
from core.settings import Settings

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a usage error exits 1 like every other error: argparse's own
    2 would read as "changes" to a script calling `fp plan`."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")

Command = Callable[[argparse.Namespace, Settings], int]


class Style:
    """ANSI colour, only on a terminal and never when NO_COLOR is set."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    @classmethod
    def for_stream(cls, stream: Any) -> Style:
        return cls(hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ)


# --------------------------------------------------------------------------- registry client

def _client(settings: Settings) -> Any:
    from registry.client import RegistryClient

    return RegistryClient(settings.registry.url, token=settings.registry.client_token)


def _load(path: str) -> list[dict[str, Any]]:
    from registry.repo_loader import load_repository

    folder = Path(path)
    if not folder.is_dir():
        raise FeaturePlatformError(f"{folder} is not a folder of feature definitions")
    return load_repository(folder)


_ACTION_MARK = {"create": ("+", "32"), "update": ("~", "33"), "unchanged": ("=", "2")}


def print_changes(changes: list[dict[str, Any]], style: Style) -> None:
    for change in changes:
        mark, colour = _ACTION_MARK[change["action"]]
        title = f"{mark} {change['kind']} {change['name']}"
        if change["action"] == "create":
            detail = "new, version 1"
        elif change["action"] == "update":
            cls = change["change_class"]
            detail = (f"v{change['from_version']} → v{change['to_version']} "
                      f"({style(cls, '31;1') if cls == 'breaking' else cls})")
        else:
            detail = f"unchanged at v{change['from_version']}"
        print(f"{style(title, colour)}  {detail}")
        if change["action"] == "update":
            for entry in change["diff"]:
                print("    " + _diff_line(entry, style))


def _diff_line(entry: dict[str, Any], style: Style) -> str:
    if entry["op"] == "added":
        return style(f"+ {entry['path']}: {entry['to']!r}", "32")
    if entry["op"] == "removed":
        return style(f"- {entry['path']}: {entry['from']!r}", "31")
    return style(f"~ {entry['path']}: {entry['from']!r} → {entry['to']!r}", "33")


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    result = _client(settings).apply(_load(args.path), dry_run=True)
    print_changes(result["changes"], Style.for_stream(sys.stdout))
    changed = [c for c in result["changes"] if c["action"] != "unchanged"]
    print(f"\n{len(changed)} to change, {len(result['changes']) - len(changed)} unchanged.")
    return EXIT_CHANGES if changed else EXIT_OK


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    result = _client(settings).apply(_load(args.path), message=args.message)
    print_changes(result["changes"], Style.for_stream(sys.stdout))
    changed = sum(c["action"] != "unchanged" for c in result["changes"])
    print(f"\nApplied: {changed} registered, {len(result['changes']) - changed} unchanged.")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    rows = [("KIND", "NAME", "LATEST", "ACTIVE", "DEPLOYMENT", "JOB", "BACKFILLED")]
    for kind, path in (("entity", "/v1/entities"), ("source", "/v1/sources"),
                       ("feature_view", "/v1/feature-views"),
                       ("on_demand_feature_view", "/v1/on-demand-feature-views")):
        for item in client.get(path)["items"]:
            active = item["active_version"]
            deployment, job, backfilled = "", "", ""
            if kind == "feature_view":
                deployment, job = _deployment_summary(
                    client.get(f"{path}/{item['name']}/deployments")["deployments"])
                backfilled = _coverage_summary(
                    client.get(f"{path}/{item['name']}/backfills")["coverage"])
            rows.append((kind, item["name"], str(item["latest_version"]),
                         "-" if active is None else str(active), deployment, job, backfilled))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    return EXIT_OK


def _coverage_summary(coverage: dict[str, Any]) -> str:
    """Per version, what its offline feature table holds: ``v2 2026-01-01..2026-02-01``."""
    parts = []
    for version, table in sorted(coverage.items(), key=lambda item: int(item[0])):
        spans = ", ".join(f"{c['start'][:10]}..{c['end'][:10]}" for c in table["covered"])
        failed = len(table["failed_chunks"])
        parts.append(f"v{version} {spans or 'nothing'}" + (f" ({failed} failed)" if failed
                                                            else ""))
    return "; ".join(parts) or "-"


def _deployment_summary(history: list[dict[str, Any]]) -> tuple[str, str]:
    """The newest deployment ("v3 started", "v3 failed: why", "v3 waiting: for what") and
    the job serving the active version."""
    if not history:
        return "none yet", "-"
    newest = history[0]
    summary = f"v{newest['version']} {newest['state']}"
    reason_key = {"failed": "error", "waiting": "waiting_reason"}.get(newest["state"])
    if reason_key is not None:
        summary += f": {newest.get(reason_key, '')}"[:80]
    serving = next((d for d in history if d["state"] == "completed" and d.get("job_id")), None)
    job = (serving or {}).get("job_id") or "-"
    return summary, job


# --------------------------------------------------------------------------- servers

def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from registry.store.migrate import upgrade_to_head

    upgrade_to_head(settings.require_database_url())
    print("registry database is at the latest migration")
    return EXIT_OK


def cmd_registry_serve(args: argparse.Namespace, settings: Settings) -> int:
    from offline.backfill_api import route_handlers
    from offline.bootstrap import backfills
    from registry.bootstrap import build, serve

    # Backfills are built on their first request: a registry without Flink or a warehouse
    # still serves everything else.
    handlers = route_handlers(lambda: backfills(settings, running=False),
                              lambda: backfills(settings))
    serve(build(settings, handlers), args.host, args.port)
    return EXIT_OK


class Worker(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


def run_until_stopped(worker: Worker) -> int:
    """Run a long-lived worker until SIGTERM or Ctrl-C, either of which stops it cleanly."""
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        worker.run()
    except KeyboardInterrupt:
        worker.stop()
    return EXIT_OK


def cmd_writer_run(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.bootstrap import build

    return run_until_stopped(build(settings))


def cmd_online_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.bootstrap import online_store

    migration = online_store(settings).migrate_key_layout()
    print(f"online store: {migration.moved} keys moved to the current layout, "
          f"{migration.superseded} superseded first-layout keys deleted")
    return EXIT_OK


def cmd_deployer_run(args: argparse.Namespace, settings: Settings) -> int:
    from deployer.bootstrap import build

    return run_until_stopped(build(settings))


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from fp.up import Ports, run

    return run(settings, demo=args.demo, ports=Ports(registry=args.registry_port,
                                                     serving=args.serving_port,
                                                     ingest=args.ingest_port))


def cmd_serving_serve(args: argparse.Namespace, settings: Settings) -> int:
    from serving.bootstrap import build, serve

    serve(build(settings), args.host, args.port)
    return EXIT_OK


def cmd_ingest_serve(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.bootstrap import build, serve

    serve(build(settings), settings, args.host, args.port)
    return EXIT_OK


def cmd_ingest_push(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ingest.batches import Mode
    from ingest.push import IngestClient, push_file

    path = Path(args.file)
    lines = sum(1 for line in path.open("rb") if line.strip()) if path.is_file() else 0
    client = IngestClient(settings.ingest.url, token=settings.registry.client_token)
    console = Console(stderr=True)
    started = time.monotonic()
    try:
        with Progress(TextColumn(f"{args.source}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console,
                      disable=not console.is_terminal) as bar:
            task = bar.add_task("push", total=lines, rate="")

            def advance(sent: int) -> None:
                done = bar.tasks[0].completed + sent
                rate = done / max(time.monotonic() - started, 1e-9)
                bar.update(task, advance=sent, rate=f"{rate:,.0f} events/s")

            summary = push_file(client, args.source, path, batch_size=args.batch_size,
                                mode=Mode(args.mode), on_batch=advance)
    finally:
        client.close()
    print(f"{args.source}: {summary.sent:,} events sent, {summary.accepted:,} accepted, "
          f"{summary.rejected:,} rejected ({time.monotonic() - started:.1f} s)")
    for reason, count in summary.reasons.most_common():
        print(f"  {count:>8,}  {reason}")
    for example in summary.examples:
        print(f"  line {example.line}: {example.message}")
    return EXIT_OK if summary.rejected == 0 else EXIT_CHANGES


# --------------------------------------------------------------------------- offline store

def _key_values(pairs: list[str]) -> dict[str, str]:
    parsed = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    if len(parsed) != len(pairs):
        raise FeaturePlatformError("--kafka-property takes KEY=VALUE")
    return parsed


def cmd_archiver_run(args: argparse.Namespace, settings: Settings) -> int:
    from offline.archiver import ArchiverOptions
    from offline.bootstrap import build

    options = ArchiverOptions(batch_rows=args.batch_rows, batch_seconds=args.batch_seconds,
                              registry_poll_seconds=args.registry_poll,
                              maintenance_every_seconds=args.maintain_every,
                              consumer_properties=_key_values(args.kafka_property))
    return run_until_stopped(build(settings, options))


def cmd_archiver_maintain(args: argparse.Namespace, settings: Settings) -> int:
    from core.domain.durations import parse_duration
    from offline import iceberg
    from offline.bootstrap import open_stores

    catalog = open_stores(settings).catalog
    names = args.source or [name for _, name in catalog.list_tables(iceberg.RAW_NAMESPACE)]
    for name in names:
        report = iceberg.maintain(iceberg.load_archive(catalog, name),
                                  target_file_bytes=args.target_file_mb * 1024 * 1024,
                                  snapshot_max_age_ms=parse_duration(args.snapshot_retention),
                                  orphan_min_age_ms=parse_duration(args.orphan_age))
        print(report)
    return EXIT_OK


def cmd_dataset(args: argparse.Namespace, settings: Settings) -> int:
    from offline.bootstrap import open_stores
    from offline.training_sets import build_training_set

    references = [r.strip() for r in (args.features or "").split(",") if r.strip()]
    if not references and not args.reproduce:
        raise FeaturePlatformError("--features is required (REF[,REF...], e.g. "
                                   "user_clicks:clicks_1h,user_clicks@2:amount_1h)")
    stores = open_stores(settings)
    result = build_training_set(stores.registry, stores.catalog, entities=args.entities,
                                references=references, out=args.out, reproduce=args.reproduce)
    print(f"{args.out}: {result.table.num_rows:,} rows; versions "
          f"{result.metadata['versions']}; snapshots {result.metadata['snapshots']}")
    return EXIT_OK


# --------------------------------------------------------------------------- drift

def cmd_monitor_run(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.bootstrap import build

    return run_until_stopped(build(settings))


def cmd_drift_baseline(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.baselines import baseline_of_dataset, pinned_view_version

    view, version = pinned_view_version(args.view)
    if args.dataset and not (args.start or args.end):
        features, origin = baseline_of_dataset(Path(args.dataset), view, version)
        source = f"{origin['file']} ({origin['rows']:,} rows)"
    elif args.start and args.end and not args.dataset:
        from monitor.baselines import baseline_of_archive
        from offline.bootstrap import open_stores

        stores = open_stores(settings)
        features, origin = baseline_of_archive(
            stores.registry, stores.catalog, view, version, from_ms=_instant(args.start),
            to_ms=_instant(args.end))
        source = f"the archive from {args.start} to {args.end}"
    else:
        raise FeaturePlatformError("name either --dataset FILE.parquet or both --from and --to")
    answer = _client(settings).post(f"/v1/feature-views/{view}/baselines",
                                    {"version": version, "features": features,
                                     "origin": origin})
    print(f"baseline of {view}@{version} registered at position {answer['position']}: "
          f"{', '.join(sorted(features))} from {source}")
    return EXIT_OK


def _instant(text: str) -> int:
    from core.domain.durations import parse_instant

    try:
        return parse_instant(text)
    except ValueError as error:
        raise FeaturePlatformError(str(error)) from None


def cmd_drift_status(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    views = [args.view] if args.view else [item["name"] for item in
                                           client.get("/v1/feature-views")["items"]]
    rows = [("VIEW", "VERSION", "FEATURE", "METRIC", "VALUE", "ALERT AT", "STATE")]
    unjudged = []
    for view in views:
        status = client.get(f"/v1/feature-views/{view}/drift")
        if not status["baselines"]:
            unjudged.append(view)
        rows += [(view, str(r["version"]), r["feature"], r["metric"], f"{r['value']:.4g}",
                  f"{r['alert_at']:.4g}", r["severity"]) for r in status["readings"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    if unjudged:
        print(f"\nno baseline (`fp drift baseline VIEW@N`): {', '.join(unjudged)}")
    return EXIT_OK


# --------------------------------------------------------------------------- backfills

def _backfill_plan(service: Any, args: argparse.Namespace) -> Any:
    from core.domain.backfills import Reprocess
    from core.domain.durations import parse_duration
    from core.domain.references import parse_view_version

    start, end = _instant(args.start), _instant(args.end)
    try:
        view, version = parse_view_version(args.view)
        chunk = parse_duration(args.chunk)
    except ValueError as error:
        raise FeaturePlatformError(str(error)) from None
    return service.plan(view, version, start, end, chunk_ms=chunk,
                        reprocess=Reprocess(args.reprocess))


def print_backfill_plan(plan: Any) -> None:
    body = plan.to_json()
    covered = ", ".join(f"{c['start']}..{c['end']}" for c in body["coverage"]) or "nothing"
    print(f"{body['view']}@{body['version']} → {body['table']} (holds: {covered})")
    rows = [("START", "END", "STATE", "EVENTS", "RUNS")]
    rows += [(c["start"], c["end"], c["state"], f"≈{c['events']:,}",
              "yes" if c["runs"] else "no") for c in body["chunks"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    print(f"\n{body['chunks_to_run']} of {len(body['chunks'])} chunks to run, "
          f"≈{body['events_to_read']:,} archived events to read "
          f"(--reprocess {body['reprocess']}).")


def cmd_backfill_plan(args: argparse.Namespace, settings: Settings) -> int:
    from offline.bootstrap import backfills

    plan = _backfill_plan(backfills(settings, running=False), args)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print_backfill_plan(plan)
    return EXIT_OK


def cmd_backfill_run(args: argparse.Namespace, settings: Settings) -> int:
    from core.domain.events import Provenance
    from offline.backfill_progress import chunk_bar
    from offline.bootstrap import backfills

    service = backfills(settings)
    plan = _backfill_plan(service, args)
    print_backfill_plan(plan)
    actor = f"fp backfill run ({getpass.getuser()})"
    with chunk_bar(len(plan.to_run)) as progress:
        summary = service.run(plan, Provenance(actor=actor), progress)
    ran = [r for r in summary.results if r.ran]
    print(f"backfill {summary.backfill}: {len(ran)} chunk(s) committed, "
          f"{sum(r.rows for r in ran):,} rows from {sum(r.events_read for r in ran):,} events")
    if summary.error is not None:
        print(f"error: {summary.error}; {len(summary.failed)} chunk(s) not done "
              "(`--reprocess failed` runs them again)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="fp", description="Feature platform command line")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, the libraries' included")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Command, help_text: str,
                parent: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(name, help=help_text,
                                                         description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    up = command("up", cmd_up, "run the whole platform on this machine until Ctrl-C")
    up.add_argument("--demo", action="store_true",
                    help="also apply examples/ and send sample events through the ingest API")
    up.add_argument("--registry-port", type=int, default=8000)
    up.add_argument("--serving-port", type=int, default=8001)
    up.add_argument("--ingest-port", type=int, default=8002)

    plan = command("plan", cmd_plan, "show what `fp apply` would change (exit 2 = changes)")
    plan.add_argument("path", nargs="?", default=".", help="features repo folder")
    apply = command("apply", cmd_apply, "register the changed definitions, all or nothing")
    apply.add_argument("path", nargs="?", default=".", help="features repo folder")
    apply.add_argument("-m", "--message", help="why; stored with every event")
    command("status", cmd_status, "definitions, latest and active versions")

    db = commands.add_parser("db", help="registry database").add_subparsers(
        dest="db_command", required=True, metavar="COMMAND")
    command("upgrade", cmd_db_upgrade, "run migrations to head (idempotent)", db)

    registry = commands.add_parser("registry", help="registry API").add_subparsers(
        dest="registry_command", required=True, metavar="COMMAND")
    serve = command("serve", cmd_registry_serve, "run the registry REST API", registry)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    serving = commands.add_parser("serving", help="feature serving API").add_subparsers(
        dest="serving_command", required=True, metavar="COMMAND")
    serving_serve = command("serve", cmd_serving_serve, "run the feature serving API", serving)
    serving_serve.add_argument("--host", default="127.0.0.1")
    serving_serve.add_argument("--port", type=int, default=8001)

    _add_ingest_commands(commands, command)

    deployer = commands.add_parser("deployer", help="rollouts").add_subparsers(
        dest="deployer_command", required=True, metavar="COMMAND")
    command("run", cmd_deployer_run, "run a deployer worker (one of several leads)", deployer)

    writer = commands.add_parser("writer", help="feature rows → Redis").add_subparsers(
        dest="writer_command", required=True, metavar="COMMAND")
    command("run", cmd_writer_run, "apply every job's result rows to Redis", writer)

    online = commands.add_parser("online", help="the online store (Redis)").add_subparsers(
        dest="online_command", required=True, metavar="COMMAND")
    command("migrate", cmd_online_migrate, "move keys of the first layout to the current one "
            "(once, with writers, deployer and servers stopped)", online)

    _add_archiver_commands(commands, command)
    _add_drift_commands(commands, command)
    _add_backfill_commands(commands, command)

    dataset = command("dataset", cmd_dataset, "point-in-time training set from the archive")
    dataset.add_argument("--entities", required=True, metavar="ROWS.parquet",
                         help="join keys, event_timestamp, optional label columns")
    dataset.add_argument("--features", metavar="REF[,REF...]",
                         help="view:feature or view@N:feature, comma-separated")
    dataset.add_argument("--out", required=True, metavar="OUT.parquet")
    dataset.add_argument("--reproduce", metavar="EARLIER.parquet",
                         help="use the versions and snapshots an earlier training set recorded")
    return parser


def _add_drift_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]
                        ) -> None:
    monitor = commands.add_parser("monitor", help="drift detection").add_subparsers(
        dest="monitor_command", required=True, metavar="COMMAND")
    command("run", cmd_monitor_run, "run a drift monitor (one of several leads)", monitor)
    drift = commands.add_parser("drift", help="drift baselines and status").add_subparsers(
        dest="drift_command", required=True, metavar="COMMAND")
    baseline = command("baseline", cmd_drift_baseline, "register the baseline of a view "
                       "version's features from a training set of `fp dataset`, or from the "
                       "values its job would have emitted for a time range of the archive",
                       drift)
    baseline.add_argument("view", metavar="VIEW@N")
    baseline.add_argument("--dataset", metavar="FILE.parquet")
    baseline.add_argument("--from", dest="start", metavar="TIME",
                          help="ISO 8601, UTC unless it says otherwise")
    baseline.add_argument("--to", dest="end", metavar="TIME")
    status = command("status", cmd_drift_status, "the drift monitor's latest readings",
                     drift)
    status.add_argument("view", nargs="?", help="one feature view (default: every one)")


def _add_ingest_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]
                         ) -> None:
    ingest = commands.add_parser("ingest", help="the ingest API").add_subparsers(
        dest="ingest_command", required=True, metavar="COMMAND")
    ingest_serve = command("serve", cmd_ingest_serve, "run the ingest API: events checked "
                           "against their source's contract, then written to its topic", ingest)
    ingest_serve.add_argument("--host", default="127.0.0.1")
    ingest_serve.add_argument("--port", type=int, default=8002)
    push = command("push", cmd_ingest_push, "send a file of events (one JSON object a line) "
                   "through the ingest API (exit 2 = some were rejected)", ingest)
    push.add_argument("source", help="the source's name")
    push.add_argument("file", metavar="FILE.jsonl")
    push.add_argument("--batch-size", type=int, default=500, help="events a request")
    push.add_argument("--mode", choices=["partial", "atomic"], default="partial",
                      help="atomic: a batch with an invalid event writes none of its events")


def _add_archiver_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]
                           ) -> None:
    archiver = commands.add_parser("archiver", help="raw events → Iceberg").add_subparsers(
        dest="archiver_command", required=True, metavar="COMMAND")
    archive = command("run", cmd_archiver_run, "archive every registered source's raw events "
                      "into Iceberg, exactly once", archiver)
    archive.add_argument("--batch-rows", type=int, default=100_000,
                         help="append once this many events are buffered")
    archive.add_argument("--batch-seconds", type=float, default=10.0,
                         help="...or once the oldest buffered event waited this long")
    archive.add_argument("--registry-poll", type=float, default=5.0,
                         help="seconds between looks for new sources and contract versions")
    archive.add_argument("--maintain-every", type=float, default=3600.0,
                         help="seconds between compactions (0 = never)")
    archive.add_argument("--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                         help="extra consumer setting (repeatable)")
    maintain = command("maintain", cmd_archiver_maintain, "compact small files, expire old "
                       "snapshots, delete unreferenced files", archiver)
    maintain.add_argument("--source", action="append", help="only this source (repeatable)")
    maintain.add_argument("--target-file-mb", type=int, default=128)
    maintain.add_argument("--snapshot-retention", default="7d",
                          help="keep snapshots this young (datasets built on older ones can "
                               "no longer be reproduced)")
    maintain.add_argument("--orphan-age", default="1h",
                          help="delete unreferenced files only once this old (younger ones "
                               "may belong to an append in flight)")


def _add_backfill_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]
                           ) -> None:
    backfill = commands.add_parser("backfill", help="feature history → offline feature tables"
                                   ).add_subparsers(dest="backfill_command", required=True,
                                                    metavar="COMMAND")
    plan = command("plan", cmd_backfill_plan, "the chunks a backfill would run, the archived "
                   "events they read and what the feature table holds; writes nothing", backfill)
    run = command("run", cmd_backfill_run, "compute a view version's features over a range "
                  "with Flink, chunk by chunk, into features.{view}__v{N}", backfill)
    for sub in (plan, run):
        sub.add_argument("view", metavar="VIEW[@N]",
                         help="a feature view; @N a version (default: the active one)")
        sub.add_argument("--start", required=True, help="first instant, e.g. 2026-01-01")
        sub.add_argument("--end", required=True, help="end (exclusive), e.g. 2026-01-08")
        sub.add_argument("--chunk", default="1d", help="chunk length (a duration)")
        sub.add_argument("--reprocess", choices=["missing", "failed", "all"], default="missing",
                         help="also run chunks that failed before, or every chunk (their "
                              "rows are replaced)")
    plan.add_argument("--json", action="store_true", help="the plan as JSON")


PLATFORM_PACKAGES = ("core", "fp", "registry", "deployer", "sinks", "serving", "offline",
                     "ingest", "monitor", "migrations")


def configure_logging(verbose: bool) -> None:
    """The platform's own INFO lines (what a server is doing); a library's only from WARNING
    (httpx alone would log every request), everything from DEBUG with ``-v``."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    if not verbose:
        for package in PLATFORM_PACKAGES:
            logging.getLogger(package).setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    handler: Command = args.handler
    try:
        return handler(args, Settings.from_env())
    except InvalidDefinitionError as error:
        print("error: invalid definitions:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_ERROR
    except FeaturePlatformError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
