# The trainer image: `ncbi-retrain` in the training env (torch, NeMo 2.4.1, MLflow), run by the DAG's
# DockerOperator and KubernetesPodOperator as `ncbi-retrain train|evaluate ...` with data and outputs bind-mounted.
#
# Production (GPU): docker build -f docker/trainer.Dockerfile -t REGISTRY/ncbi-retrain-trainer:TAG .
#   on NVIDIA's PyTorch base (CUDA user space, drivers injected by the NVIDIA container toolkit). The
#   venv takes torch==2.13.0 from PyPI, whose Linux wheel bundles its own CUDA libraries, so the base's
#   own torch build is not used (NeMo 2.4.1's NLP models pin their own stack).
# Here (no registry, CPU): scripts/podman.sh build, i.e.
#   podman build --isolation=chroot --pull=never -v /opt/wheels:/wheels:ro \
#     --build-arg BASE_IMAGE=localhost/debian-base:bookworm --build-arg PIP_FIND_LINKS=/wheels ...
#   where /wheels holds the local torch-2.13.0+cpu wheel (pip prefers it to the CUDA build).
#
# Two big layers only (vfs storage copies every layer): the dependency layer depends on pyproject.toml
# alone, so editing tasks/ rebuilds just the small last layer.
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.04-py3
FROM ${BASE_IMAGE}

# Build-time pip settings (empty = PyPI alone): a wheel folder to look in first, extra (e.g. mirror)
# index URLs, and a CA bundle for networks that re-sign TLS. None of them end up in the image.
ARG PIP_FIND_LINKS=""
ARG PIP_EXTRA_INDEXES=""
ARG PIP_CA_BUNDLE=""
ARG TRAINER_UID=1000

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/opt/mplconfig \
    NUMBA_CACHE_DIR=/tmp/numba \
    HOME=/home/trainer

USER root
COPY pyproject.toml README.md /opt/ncbi-retrain/

# The train extra, exactly as pinned in pyproject.toml (read with tomllib, so the two never drift).
# bookworm's pip refuses system installs (PEP 668) and NVIDIA's base has its own site-packages: a venv.
RUN set -eu; \
    if [ -n "$PIP_FIND_LINKS" ]; then export PIP_FIND_LINKS; else unset PIP_FIND_LINKS; fi; \
    if [ -n "$PIP_EXTRA_INDEXES" ]; then export PIP_EXTRA_INDEX_URL="$PIP_EXTRA_INDEXES"; fi; \
    if [ -n "$PIP_CA_BUNDLE" ]; then export PIP_CERT="$PIP_CA_BUNDLE"; fi; \
    python3 -m venv /opt/venv 2>/dev/null || { \
      apt-get update && apt-get install -y --no-install-recommends python3-venv \
      && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv; }; \
    /opt/venv/bin/python -c 'import tomllib; d = tomllib.load(open("/opt/ncbi-retrain/pyproject.toml", "rb")); print("\n".join(d["project"]["dependencies"] + d["project"]["optional-dependencies"]["train"]))' > /opt/ncbi-retrain/requirements-train.txt; \
    # bookworm's pip 23 builds sdists like seqeval with setuptools' retired setup_requires path: upgrade.
    /opt/venv/bin/pip install --no-cache-dir -q 'pip>=25.1'; \
    # torch first and alone: with it in place nothing else can pull a different torch build.
    /opt/venv/bin/pip install --no-cache-dir -q \
      "$(grep -E '^torch==' /opt/ncbi-retrain/requirements-train.txt)"; \
    /opt/venv/bin/pip install --no-cache-dir -q \
      -r /opt/ncbi-retrain/requirements-train.txt 'setuptools>=69'; \
    # PyPI's torchvision does not import beside a CPU torch, and NeMo's text models do not need it.
    /opt/venv/bin/pip uninstall -q -y torchvision 2>/dev/null || true; \
    find /opt/venv -name __pycache__ -prune -exec rm -rf {} +; \
    useradd --uid "$TRAINER_UID" --create-home --home-dir /home/trainer --shell /bin/sh trainer 2>/dev/null \
      || useradd --create-home --home-dir /home/trainer --shell /bin/sh trainer; \
    # Any uid may run the image (the DockerOperator runs it as the worker's uid so mounted outputs stay theirs).
    chmod 1777 /home/trainer

COPY tasks /opt/ncbi-retrain/tasks
# No build isolation: the dependency layer brought setuptools, so this layer needs no network.
RUN /opt/venv/bin/pip install --no-cache-dir -q --no-deps --no-build-isolation /opt/ncbi-retrain \
    && /opt/venv/bin/pip check \
    && rm -rf /opt/ncbi-retrain/build \
    && ncbi-retrain --help >/dev/null \
    # matplotlib's font cache, built once here instead of in every container (writable by any uid)
    && mkdir -p /opt/mplconfig && python -c "import matplotlib.pyplot" && chmod -R a+rwX /opt/mplconfig

USER trainer
WORKDIR /home/trainer
ENTRYPOINT ["ncbi-retrain"]
CMD ["--help"]
