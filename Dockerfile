# syntax=docker/dockerfile:1
# Service image: one for every gxami service; the command picks it (gxami scheduler|collector|ingest|reports,
# gxami db migrate). Only the services' production dependency closure goes in (tests/test_production_closure.py):
# no uv, no sources, no dev stack. `--target meterlab` builds the dev-only simulator image the compose demo uses.
# Pin the base by digest in your build pipeline (python:3.11.11-slim-bookworm@sha256:...); the tag is pinned here.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PYTHONDONTWRITEBYTECODE=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
# Not editable: the venv holds the packages themselves, so the runtime stage copies it alone.
RUN uv sync --frozen --no-dev --no-editable --package gxami-collector --package gxami-ingest \
      --package gxami-scheduler --package gxami-reports --package gxami-cli

FROM build AS build-meterlab
RUN uv sync --frozen --no-dev --no-editable --package gxami-cli --package gxami-meterlab

FROM ${PYTHON_IMAGE} AS runtime-base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/app/.venv/bin:$PATH HOME=/tmp
# /var/lib/gxami: the collector's DLMS invocation counter state (a volume: compose and Kubernetes mount one).
RUN useradd --system --no-log-init --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin gxami \
    && install -d -o 10001 -g 10001 -m 700 /var/lib/gxami
WORKDIR /app

# The dev-only image for the compose demo: the services plus the simulators (gxami simulate ...).
FROM runtime-base AS meterlab
COPY --from=build-meterlab /app/.venv /app/.venv
USER 10001:10001
ENTRYPOINT ["gxami"]

# The default target, last: the service image.
FROM runtime-base AS service
COPY --from=build /app/.venv /app/.venv
USER 10001:10001
ENTRYPOINT ["gxami"]
