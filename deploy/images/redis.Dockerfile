# Redis for the Compose cluster, from Debian's redis-server on the local base
# image (no registry needed): docker build --network host -f deploy/images/redis.Dockerfile deploy/images
ARG DEBIAN=debian:bookworm-slim
FROM ${DEBIAN}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
CMD ["redis-server", "--save", "", "--appendonly", "no"]
