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
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /app --create-home outbox
USER outbox
WORKDIR /app
# The daemon has no HTTP port unless OUTBOX_METRICS_PORT is set; the check
# asks the database instead: reachable and migrated.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["outbox", "db", "current", "--check"]
CMD ["outbox", "run"]
