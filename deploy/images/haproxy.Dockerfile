# HAProxy for the Compose cluster, from Debian's haproxy on the local base image.
# The configuration is mounted at /etc/haproxy/haproxy.cfg (haproxy/haproxy.cfg).
ARG DEBIAN=debian:bookworm-slim
FROM ${DEBIAN}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/*
USER haproxy
EXPOSE 8443 8404
# -W: master-worker, so SIGUSR2 reloads; -db: stay in the foreground
CMD ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
