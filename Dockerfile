# whapi-outbox: the dispatcher daemon (default), HTTP API or cron runner.
# Needs OUTBOX_DATABASE_URL (a real PostgreSQL) and OUTBOX_ENCRYPTION_KEY.
#
# Dependencies install from requirements.lock (every version pinned, every
# file hash-checked); the package itself after them, with --no-deps. Release
# builds pin the base image by digest:
#   docker build --build-arg PYTHON_IMAGE=python:3.12-slim@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir --prefix=/install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY outbox ./outbox
COPY providers ./providers
COPY db ./db
COPY migrations ./migrations
RUN pip install --no-cache-dir --prefix=/install --no-deps .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OUTBOX_HEARTBEAT_FILE=/tmp/outbox.alive
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /app --create-home outbox
USER outbox
WORKDIR /app
# Liveness of the process, not of the database: `outbox run` and `outbox
# serve` touch OUTBOX_HEARTBEAT_FILE every 10 s from their event loop, and
# `outbox alive` fails once it is a minute old. A database outage leaves
# every container healthy (restarting them would not help); a stuck or dead
# process does not. One-shot commands (db upgrade, dispatch --once) end
# before the start period does.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["outbox", "alive"]
CMD ["outbox", "run"]
