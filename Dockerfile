# kmsd images. From the repository root:
#   docker build -t kmsd .                 the server (the default, last target)
#   docker build --target tools -t kmsd-tools .
# deploy/docker-compose.yml builds both, and the peers of the cluster from
# deploy/images/. Where no registry is reachable, deploy/docker/base-image.sh makes
# debian:bookworm-slim from Debian's packages first; build with --network host.
# KMS_BUILD_ID (default: unknown, the context has no .git) is what --version and
# kms_build_info show beside the version; tests/container/compose.sh passes
# `git describe`. KMS_VERSION is the image label only and must equal CMake's
# project(VERSION) (tests/lint/version.sh checks it).
# Targets:
#   build   Debian slim + the -dev packages and cmake; builds kmsd and kmsctl
#   kmsd    (default, last) runtime libraries only, non-root user, HEALTHCHECK
#   tools   openssl + keytool + PyKMIP: makes the dev PKI and runs the KMIP server
#           of the Compose topology (development only: PyKMIP is not an HSM)
ARG DEBIAN=debian:bookworm-slim
ARG KMS_VERSION=0.2.0

FROM ${DEBIAN} AS build
ARG KMS_BUILD_ID=unknown
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libmicrohttpd-dev libgnutls28-dev libssl-dev \
      libjansson-dev libcurl4-openssl-dev libhiredis-dev libp11-kit-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY common common
COPY kms kms
COPY hsm hsm
COPY cluster cluster
COPY server server
COPY cli cli
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKMS_TESTS=OFF -DKMS_WERROR=ON \
          -DKMS_BUILD_ID="${KMS_BUILD_ID}" \
 && cmake --build /build -j"$(nproc)" --target kmsd kmsctl \
 && install -D -m 0755 /build/server/kmsd /out/bin/kmsd \
 && install -D -m 0755 /build/cli/kmsctl /out/bin/kmsctl

FROM ${DEBIAN} AS tools
ARG KMS_VERSION
LABEL org.opencontainers.image.title="kmsd-tools" org.opencontainers.image.version="${KMS_VERSION}"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      bash openssl openjdk-17-jre-headless python3-pykmip libssl3 libjansson4 libcurl4 libhiredis0.14 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin kmsd \
 && install -d -o kmsd -g kmsd -m 0700 /cluster /var/lib/pykmip
COPY --from=build /out/bin/kmsctl /usr/local/bin/kmsctl
COPY deploy/pki/dev-pki.sh deploy/templates/cluster-pki.sh deploy/templates/render.sh /usr/local/share/kmsd/
COPY deploy/templates/pykmip-server.conf.in /usr/local/share/kmsd/
COPY tests/stand-ins/pykmip/policies /usr/local/share/kmsd/pykmip-policies
ENV KMS_DEV_PKI=/usr/local/share/kmsd/dev-pki.sh
USER kmsd

FROM ${DEBIAN} AS kmsd
ARG KMS_VERSION
LABEL org.opencontainers.image.title="kmsd" \
      org.opencontainers.image.description="key-management server: mutual TLS, KMIP/Vault/PKCS#11 master keys" \
      org.opencontainers.image.version="${KMS_VERSION}"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      bash ca-certificates curl libmicrohttpd12 libgnutls30 libssl3 libjansson4 libcurl4 libhiredis0.14 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin kmsd \
 && install -d -o kmsd -g kmsd -m 0700 /cluster /run/kmsd /var/log/kmsd /var/lib/kmsd
COPY --from=build /out/bin/ /usr/local/bin/
COPY deploy/templates/render.sh deploy/templates/kmsd-entrypoint.sh deploy/templates/kms.properties.in \
     /usr/local/share/kmsd/
ENV NODE_NAME=kmsd NODE_ADDRESS=0.0.0.0 NODE_PORT=8443 PKI_DIR=/cluster/pki HSM_HOST=pykmip HSM_PORT=5696 \
    CACHE_TYPE=distributed REDIS_URL=redis://redis:6379/0 CLUSTER_KEY_FILE=/cluster/cluster.key \
    KEYSTORE_FILE=/var/lib/kmsd/keystore/kms.jks CLUSTER_NAME=kmsd \
    AUDIT_FILE=/var/log/kmsd/audit.log LOG_LEVEL=info
USER kmsd
EXPOSE 8443
# /health/ready over TLS, verified against the dev root CA (the kmsServer SANs include 127.0.0.1)
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS --max-time 2 --cacert "${PKI_DIR}/rootCA.crt" "https://127.0.0.1:${NODE_PORT}/health/ready" >/dev/null || exit 1
ENTRYPOINT ["/usr/local/share/kmsd/kmsd-entrypoint.sh"]
CMD ["serve"]
