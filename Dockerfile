# The sgp-infra catalogue API service image (sgp-infra:api.image).
#   docker build -t ghcr.io/sgp-infra/api:0.1.0 .
# Runs as a non-root user with a read-only root filesystem (the Deployment
# mounts /tmp as an emptyDir); the catalogue arrives as a ConfigMap file.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sgp_infra ./sgp_infra
RUN pip install --no-cache-dir --prefix=/install ".[api]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
RUN groupadd --gid 10001 sgp && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sgp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "sgp_infra"]
CMD ["serve", "--config-file", "/etc/sgp-infra/catalog.json", "--host", "0.0.0.0", "--port", "8080"]
