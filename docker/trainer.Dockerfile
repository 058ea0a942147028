# The trainer: TensorFlow/Keras, tf2onnx, scikit-learn. Writes bundles into the shared `models` volume
# (docker compose --profile train run --rm trainer [regimetry train --data /data/bars.csv --output /models]).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app
COPY pyproject.toml README.md ./
COPY regimetry ./regimetry
COPY trainer ./trainer
RUN pip install ".[train]" \
    && useradd --system --uid 10001 --home /app regimetry \
    && mkdir -p /models && chown regimetry /models

USER regimetry
VOLUME ["/models"]
CMD ["regimetry", "train", "--output", "/models"]
