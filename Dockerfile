# The IOC application image (used by compose.yaml). Services run as `ioc <command>`.
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY ingest ingest
COPY analytics analytics
COPY api api
COPY dashboard dashboard
COPY models models
COPY sites sites
RUN pip install --no-cache-dir . && useradd --system --home /app ioc && mkdir -p /app/var \
    && chown ioc /app/var
USER ioc
ENV IOC_VAR_DIR=/app/var IOC_SITE_FILE=/app/sites/iahdrai.yaml
ENTRYPOINT ["ioc"]
