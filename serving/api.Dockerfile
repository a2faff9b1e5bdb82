# syntax=docker/dockerfile:1
# The BiomedGPT HTTP API: `biomedgpt serve` on the ONNX Runtime engine. Only the `serve` extra is installed
# (ONNX Runtime, FastAPI, uvicorn: no torch, no CUDA), pinned by requirements/constraints.txt.
# Build from the repository root:
#   docker build -f serving/api.Dockerfile -t biomedgpt-api:0.1.0 .
# The exported model is mounted at /models/biomedgpt, or fetched at start from BIOMEDGPT_MODEL_URL (a tar.gz,
# checked against BIOMEDGPT_MODEL_SHA256) by serving/api-entrypoint.sh. See serving/README.md.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Copy only what the install needs, so edits to tests or docs keep the install layer cached.
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY biomedgpt biomedgpt
RUN pip install -c requirements/constraints.txt ".[serve]" \
    && rm -rf /app/biomedgpt /app/build /app/*.egg-info
# configs/serve/*.yaml stays available for `-c`; the server itself is configured from the environment.
COPY configs configs
COPY --chmod=0755 serving/api-entrypoint.sh /usr/local/bin/api-entrypoint.sh

# A fixed numeric uid, so Kubernetes can check runAsNonRoot; the model folder is the one place it writes.
RUN groupadd --system --gid 10001 biomedgpt \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin biomedgpt \
    && mkdir -p /models/biomedgpt \
    && chown 10001:10001 /models/biomedgpt
USER 10001:10001

# Every ServeConfig field can be set as BIOMEDGPT_SERVE_<FIELD>; the API key comes from BIOMEDGPT_API_KEY.
# The CLI binds 127.0.0.1 by default; in a container it must listen on every interface.
ENV HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    BIOMEDGPT_SERVE_HOST=0.0.0.0 \
    BIOMEDGPT_SERVE_PORT=8000 \
    BIOMEDGPT_SERVE_ENGINE=onnxruntime \
    BIOMEDGPT_SERVE_MODEL=/models/biomedgpt
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=120s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('BIOMEDGPT_SERVE_PORT', '8000'), timeout=2)"]
# Arguments given to `docker run IMAGE ...` are passed on to `biomedgpt serve`.
ENTRYPOINT ["/usr/local/bin/api-entrypoint.sh"]
CMD []
