# The eocap image: its CLI and Prefect flows, and (compose.yaml) the Prefect server and the Dask
# scheduler and workers. CPU only; captions come from a caption server (vLLM) over HTTP.
# Builds on amd64 and arm64 (every dependency has wheels for both):
#   docker build -f docker/pipeline.Dockerfile -t eocap-worker .
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/pipeline.Dockerfile .
#
# In-process models (captioner.backend: transformers) on a GPU host, amd64:
#   docker build -f docker/pipeline.Dockerfile --build-arg EOCAP_EXTRAS=models -t eocap-gpu .
# constraints.txt pins torch's CPU build (+cpu, only on PyTorch's own index) for the dev venv, so
# that pin is dropped here and pip takes torch 2.13.0 from PyPI: the CUDA 13.0 build (NVIDIA
# driver >= 580). Run it with --gpus all.
#
# The trainer (eocap train/eval/embed, docs/training.md) on GPU hosts, amd64:
#   docker build -f docker/pipeline.Dockerfile --build-arg EOCAP_EXTRAS=train -t eocap-train .
#   docker run --gpus all --shm-size 16g -v /data:/data eocap-train train /data/train.yaml --procs 8
FROM python:3.11-slim
ARG EOCAP_EXTRAS=""
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180
WORKDIR /opt/eocap
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
COPY flows ./flows
COPY validation ./validation
COPY trainer ./trainer
COPY prompts ./prompts
RUN grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
    && pip install --no-cache-dir -c /tmp/constraints.txt ".${EOCAP_EXTRAS:+[$EOCAP_EXTRAS]}" \
    && rm /tmp/constraints.txt
WORKDIR /work
ENTRYPOINT ["eocap"]
CMD ["--help"]
