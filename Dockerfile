# syntax=docker/dockerfile:1
#
# The LearnTrack image: the `learntrack` CLI with the pinned runtime dependencies
# of pyproject.toml, a JRE for Spark (pyspark starts its JVM in the container) and
# Spark's own Kafka connector, resolved at build time by mvn from the committed
# pom (learntrack/stack/jvm/spark-kafka); Maven itself is removed afterwards.
# compose.yaml builds it as learntrack:0.1.0 for learntrack-stream and
# learntrack-api. It installs the package without the [local] extra: containers
# talk to the compose services, never to local servers.
#
#   docker build -t learntrack:0.1.0 .

FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYSPARK_PYTHON=/usr/local/bin/python \
    PYSPARK_DRIVER_PYTHON=/usr/local/bin/python \
    LEARNTRACK_DATA_DIR=/var/lib/learntrack \
    LEARNTRACK_STACK__JARS_DIR=/opt/learntrack/jars

# Spark 4 needs Java 17+; procps provides `ps`, which Spark's launch scripts call.
# (The man directory is missing on slim images and the JRE's postinst needs it.)
RUN set -eux; \
    mkdir -p /usr/share/man/man1; \
    apt-get update; \
    apt-get install -y --no-install-recommends openjdk-17-jre-headless procps; \
    rm -rf /var/lib/apt/lists/*; \
    java -version

# Run as an unprivileged user; the data directory (streaming checkpoints) is
# created here so that a named volume mounted on it inherits the ownership.
RUN set -eux; \
    useradd --system --user-group --uid 10001 --create-home \
        --home-dir /home/learntrack --shell /usr/sbin/nologin learntrack; \
    mkdir -p /var/lib/learntrack; \
    chown learntrack:learntrack /var/lib/learntrack

# README.m[d]: copied when present (pyproject names it), without failing if not.
WORKDIR /tmp/learntrack-src
COPY pyproject.toml README.m[d] ./
COPY learntrack/ ./learntrack/
RUN set -eux; \
    pip install --no-cache-dir .; \
    cd /; \
    rm -rf /tmp/learntrack-src; \
    learntrack --help > /dev/null; \
    apt-get update; \
    apt-get install -y --no-install-recommends maven; \
    learntrack stack fetch spark-kafka; \
    apt-get purge -y --auto-remove maven; \
    rm -rf /var/lib/apt/lists/* /root/.m2

# Leave the deleted source directory before any later instruction runs in it.
USER learntrack
WORKDIR /home/learntrack

ENTRYPOINT ["learntrack"]
CMD ["--help"]
