# syntax=docker/dockerfile:1
# Training image: `biomedgpt pretrain|finetune|eval` on NVIDIA GPUs, and the Ray head/worker image of the KubeRay
# RayJob and RayCluster in k8s/ (its Ray must equal their rayVersion: 2.60.0, as pinned in the constraints).
# Build from the repository root:
#   docker build -f serving/train.Dockerfile -t biomedgpt-train:0.1.0-ray2.60.0-cu130 .
#
# torch==2.13.0 from PyPI is the CUDA 13.0 build: cuBLAS, cuDNN 9.20, NCCL and the rest arrive as pip wheels
# (cuda-toolkit 13.0.3), so the base image only needs CUDA 13.0's user-space basics. The nodes need an NVIDIA
# driver that supports CUDA 13.0 (R580 or newer).
FROM ghcr.io/astral-sh/uv:0.9.26 AS uv

FROM nvidia/cuda:13.0.2-base-ubuntu22.04

ARG PYTHON_VERSION=3.11.14
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1

# wget: KubeRay's default health probes of Ray pods call it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates wget \
    && rm -rf /var/lib/apt/lists/*

# Ubuntu 22.04 has no maintained Python 3.11: take a standalone CPython build through uv.
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "$PYTHON_VERSION" \
    && uv venv --seed --python "$PYTHON_VERSION" /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY biomedgpt biomedgpt
COPY tokenizers tokenizers
COPY configs configs
# The constraints pin everything (torch==2.13.0, ray==2.60.0, ...); ray[default] adds the dashboard and job
# server a Ray head needs for `ray job submit`. Editable, so /app is laid out like a checkout: the package finds
# tokenizers/ beside it, and relative paths in commands (-c configs/...) resolve from /app, the pods' workingDir.
RUN uv pip install --python /opt/venv/bin/python -c requirements/constraints.txt \
        "torch==2.13.0" "ray[default]==2.60.0" -e ".[train]"

# uid 1000 like the upstream Ray images, so KubeRay pod specs written for those work unchanged.
RUN groupadd --gid 1000 ray \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/ray --shell /bin/bash ray \
    && chown ray:ray /app
USER 1000:1000
CMD ["biomedgpt", "--help"]
