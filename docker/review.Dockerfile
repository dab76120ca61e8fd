# The review app: domain experts rate and correct captions (validation/, `eocap review`).
# Build from the repository root: docker build -f docker/review.Dockerfile -t eocap-review .
# The dataset is mounted read-only at /data; the app's own state goes to a volume over
# /data/review (its chip cache, review/chips, and the SQLite database when no --db is given),
# which needs an empty DATASET/review folder on the host as a mount point. Reviews in PostgreSQL:
#   mkdir -p $PWD/output/demo/review
#   docker run -p 8700:8700 -v $PWD/output/demo:/data:ro -v eocap-review:/data/review \
#     -e EOCAP_REVIEW_DB=postgresql://eocap:secret@db/eocap eocap-review /data
# Create the first admin: docker run -it ... eocap-review user /data alice --role admin
# `apply` writes review results into the dataset (shards/_review/): mount it writable for that.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/eocap
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
COPY flows ./flows
COPY validation ./validation
COPY trainer ./trainer
COPY prompts ./prompts
# /data/review belongs to the reviewer so that a fresh volume mounted there is theirs too
# (Docker copies the image's folder, owner included, into an empty named volume).
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --create-home --uid 1000 reviewer \
    && mkdir -p /data/review && chown reviewer /data/review
USER reviewer
EXPOSE 8700
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8700/login')"
# Behind a TLS proxy add --secure-cookies. `eocap review DATASET` serves; other subcommands
# (user, campaign, export, apply) run the same way: docker run ... eocap-review apply /data
ENTRYPOINT ["eocap", "review"]
CMD ["--help"]
