# The pipeline worker: eocap, its CLI and the Prefect flows (CPU; talks to a caption server).
# Build from the repository root: docker build -f docker/pipeline.Dockerfile -t eocap-worker .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180
WORKDIR /opt/eocap
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
COPY flows ./flows
COPY validation ./validation
COPY prompts ./prompts
# The template and openai captioners need no torch; add ".[models]" for in-process models.
RUN pip install --no-cache-dir -c constraints.txt .
WORKDIR /work
ENTRYPOINT ["eocap"]
CMD ["--help"]
