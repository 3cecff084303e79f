"""Submit compiled jobs to a Flink session cluster; run as a long-lived subprocess.

``python -m sinks.flink_submit`` reads one JSON request per line on stdin —
``{"spec": JobSpec.to_json(), "flink_url": ..., "jars": [...], "checkpoint_interval_ms": ...}``
(a spec configured with ``execution.runtime-mode = batch`` runs as a bounded batch job)
— and answers each with one line ``fp-submit {"job_id": ...}`` (or ``{"error": ...}``).
PyFlink's client runs in a JVM, which the deployer keeps warm in this child rather than
carrying it itself (starting the JVM is most of a cold submission); a child also lets the
caller enforce a time limit.  The job id is fixed by the spec, so a repeated submission of
a running job is refused by the cluster instead of starting a second copy.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import urlsplit


def submit(request: dict[str, Any]) -> str:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    spec = request["spec"]
    url = urlsplit(request["flink_url"])
    configuration = dict(spec["configuration"])
    batch = configuration.get("execution.runtime-mode") == "batch"
    settings = (EnvironmentSettings.in_batch_mode() if batch
                else EnvironmentSettings.in_streaming_mode())
    table_env = TableEnvironment.create(settings)
    config = table_env.get_config()
    options = {
        "execution.target": "remote",
        "rest.address": url.hostname or "127.0.0.1",
        "rest.port": str(url.port or 8081),
        "pipeline.name": spec["job_name"],
        "$internal.pipeline.job-id": spec["job_id"],
        "parallelism.default": str(request.get("parallelism", 1)),
        "table.local-time-zone": "UTC",
        "restart-strategy.type": "exponential-delay",
    }
    if not batch:  # a bounded job neither checkpoints nor waits for idle partitions
        options |= {
            "execution.checkpointing.interval": f"{request['checkpoint_interval_ms']} ms",
            # A partition that receives nothing must not hold every window open.
            "table.exec.source.idle-timeout": f"{request['idle_timeout_ms']} ms",
        }
    options.update(configuration)
    if request.get("jars"):
        options["pipeline.jars"] = ";".join(f"file://{jar}" for jar in request["jars"])
    for key, value in options.items():
        config.set(key, value)
    statement_set = table_env.create_statement_set()
    for statement in spec["statements"]:
        if statement.startswith("INSERT"):
            statement_set.add_insert_sql(statement)
        else:
            table_env.execute_sql(statement)
    result = statement_set.execute()
    client = result.get_job_client()
    assert client is not None, "a submitted statement set always has a job client"
    return str(client.get_job_id())


REPLY_PREFIX = "fp-submit "


def main() -> int:
    # The client JVM starts now, while the parent still prepares its first job (a backfill
    # exports its slice meanwhile), not inside the first submission.
    from pyflink.java_gateway import get_gateway

    get_gateway()
    for line in sys.stdin:
        try:
            reply = {"job_id": submit(json.loads(line))}
        except Exception as error:  # the parent gets every failure as one reply line
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(REPLY_PREFIX + json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
