# segstream worker image.
#   docker build -t segstream:0.1.0 .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=host:9092 -p 6066:6066 segstream:0.1.0
#
# The image binds its HTTP port on every interface (SEGSTREAM_WEB_HOST=0.0.0.0), or
# `-p 6066:6066` could not reach it; outside the image the default stays 127.0.0.1.
# With several workers, set SEGSTREAM_ADVERTISED_HOST to a name the others can reach.
#
# Two stages: the builder has a compiler in case a dependency has no wheel for
# this platform; the runtime image only gets the installed site-packages.

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Copy only what the package build needs (keeps .venv, .git, tests out of the
# image layers and the cache valid across unrelated edits). README.md* so a
# missing README (pyproject's `readme`) is a build warning, not a COPY failure.
COPY pyproject.toml README.md* ./
COPY service ./service
RUN python -m venv /opt/segstream \
 && /opt/segstream/bin/pip install .


FROM python:3.11-slim

ENV PATH=/opt/segstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SEGSTREAM_RULES_DIR=/etc/segstream/rules \
    SEGSTREAM_STORE=rocksdb:///var/lib/segstream \
    SEGSTREAM_WEB_HOST=0.0.0.0 \
    SEGSTREAM_WEB_PORT=6066 \
    SEGSTREAM_CLOCK=wall

RUN groupadd --system --gid 10001 segstream \
 && useradd --system --uid 10001 --gid segstream --home-dir /var/lib/segstream --shell /usr/sbin/nologin segstream \
 && mkdir -p /var/lib/segstream /etc/segstream/rules \
 && chown -R segstream:segstream /var/lib/segstream

COPY --from=builder /opt/segstream /opt/segstream
# Default rule set baked in; compose bind-mounts ./rules and Kubernetes mounts
# a ConfigMap over this directory.
COPY rules/ /etc/segstream/rules/

# The state directory is the working directory too, so anything faust writes
# relative to the CWD (its app data dir) lands on the persistent volume.
WORKDIR /var/lib/segstream
VOLUME ["/var/lib/segstream"]
USER segstream
EXPOSE 6066

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SEGSTREAM_WEB_PORT', '6066'), timeout=2)"]

# Exec form: the worker is PID 1 and receives SIGTERM directly, so faust can
# commit offsets and close RocksDB cleanly on `docker stop` / pod deletion.
ENTRYPOINT ["segstream", "worker"]
