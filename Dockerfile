# One image for the platform's processes (registry, serving, deployer, writer, archiver)
# and one Flink image that carries the Kafka connector.
#   docker build --target app -t feature-platform .
#   docker build --target flink -t feature-platform-flink .

FROM python:3.11-slim AS app
# Java runs the PyFlink client that plans and submits the jobs; git serves the webhooks and
# bubblewrap sandboxes the Python definitions of pushed repositories.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless git bubblewrap \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY fp ./fp
COPY registry ./registry
COPY deployer ./deployer
COPY sinks ./sinks
COPY serving ./serving
COPY offline ./offline
COPY ingest ./ingest
COPY monitor ./monitor
COPY migrations ./migrations
COPY examples ./examples
RUN pip install --no-cache-dir '.[runtime]'
# The Kafka connector jars, fetched once at build time; the PyFlink client plans with them.
RUN python -c "from sinks.flink_jars import ensure_kafka_connector_jars as e; \
import shutil, pyflink, pathlib; \
[shutil.copy(j, pathlib.Path(pyflink.__file__).parent / 'lib') for j in e()]"
ENV FP_FLINK_CONNECTOR_JARS=none
USER nobody
ENTRYPOINT ["fp"]

FROM flink:2.0.2-java17 AS flink
COPY --from=app /root/.cache/fp/flink-jars/kafka/*.jar /opt/flink/lib/
