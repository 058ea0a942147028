# The live worker: Faust + ONNX Runtime + Redis + prometheus-client. No TensorFlow (the `worker` extra only);
# tests/test_deploy.py checks that this file never installs the `train` extra.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Sources only (see .dockerignore): the core (with its schemas), the connection settings, the worker and the
# operator tools. No trainer/ and no devstack/: the `regimetry` CLI lists only the commands of parts installed.
COPY pyproject.toml README.md ./
COPY regimetry ./regimetry
COPY connect ./connect
COPY worker ./worker
COPY ops ./ops
COPY archive ./archive
# faust-streaming and aiokafka pinned to the range worker/kafka_boundary.py was tested against (as in pyproject.toml)
RUN pip install ".[worker,archive]" "faust-streaming>=0.15.3,<0.16" "aiokafka>=0.14,<0.15" \
    && useradd --system --uid 10001 --home /app regimetry \
    && mkdir -p /var/log/regimetry /models \
    && chown regimetry /var/log/regimetry

# The committed default bundle; an empty `models` volume mounted here is seeded with it on first use.
COPY --chown=regimetry exported_models /models

ENV REGIMETRY_BUNDLE=/models \
    REGIMETRY_METRICS_HOST=0.0.0.0 \
    REGIMETRY_METRICS_PORT=9108 \
    REGIMETRY_DATADIR=/tmp/regimetry-faust

USER regimetry
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; t=urllib.request.urlopen('http://127.0.0.1:9108/metrics',timeout=4).read().decode(); sys.exit(0 if 'regimetry_worker_ready 1.0' in t else 1)"
CMD ["regimetry", "worker"]
