# One image for every gxami service; the command picks the service (gxami scheduler|collector|ingest|reports).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
# The services and the CLI only: the dev-only gxami-meterlab (simulators, local stack) stays out of the image.
RUN uv sync --frozen --no-dev --package gxami-collector --package gxami-ingest --package gxami-scheduler \
      --package gxami-reports --package gxami-cli && useradd --system --uid 10001 gxami \
    && install -d -o 10001 -m 700 /var/lib/gxami
# /var/lib/gxami: the collector's DLMS invocation counter state (a volume; see docker-compose.yml)
ENV PATH=/app/.venv/bin:$PATH
USER 10001
ENTRYPOINT ["gxami"]
