# The review app: domain experts rate and correct captions (validation/, `eocap review`).
# Build from the repository root: docker build -f docker/review.Dockerfile -t eocap-review .
# Run against a dataset mounted at /data, reviews in PostgreSQL (or omit --db for SQLite in
# /data/review/reviews.db):
#   docker run -p 8700:8700 -v $PWD/output/demo:/data \
#     -e EOCAP_REVIEW_DB=postgresql://eocap:secret@db/eocap eocap-review /data
# Create the first admin: docker run -it ... eocap-review user /data alice --role admin
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/eocap
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
COPY flows ./flows
COPY validation ./validation
COPY prompts ./prompts
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --create-home --uid 1000 reviewer
USER reviewer
EXPOSE 8700
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8700/login')"
# Behind a TLS proxy add --secure-cookies. `eocap review DATASET` serves; other subcommands
# (user, campaign, export, apply) run the same way: docker run ... eocap-review apply /data
ENTRYPOINT ["eocap", "review"]
CMD ["--help"]
