# AwaitHuman's production image: the wheel in a virtual environment, static files collected at
# build, run as an unprivileged user. One image for every process: compose.yaml (or your
# orchestrator) picks the command: awaithuman serve (the default), worker, beat or migrate.

# --- build: the wheel and its dependencies in /opt/awaithuman ----------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/build-tools && /opt/build-tools/bin/pip install "build>=1.2,<2"
COPY pyproject.toml README.md ./
COPY awaithuman awaithuman
COPY audit audit
COPY tenants tenants
COPY escalations escalations
COPY notifications notifications
COPY webhooks webhooks
COPY suggestions suggestions
COPY templates templates
COPY static static
RUN /opt/build-tools/bin/python -m build --wheel --outdir /dist . \
    && python -m venv /opt/awaithuman \
    && /opt/awaithuman/bin/pip install /dist/awaithuman-*.whl

# --- run -------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/awaithuman awaithuman \
    && install -d -o awaithuman -g awaithuman /run/awaithuman-metrics
COPY --from=build /opt/awaithuman /opt/awaithuman
ENV PATH=/opt/awaithuman/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AWAITHUMAN_DATA_DIR=/var/lib/awaithuman \
    LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/awaithuman
# Collected now, served by WhiteNoise. The key only lets settings load for this one command; the
# running container gets its own SECRET_KEY from the environment.
RUN SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(64))')" \
    awaithuman manage collectstatic --noinput --verbosity 0
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["awaithuman", "serve", "--port", "8000"]
