# syntax=docker/dockerfile:1
#
# hubcache container image.
#
#   docker build -t hubcache .
#   docker run -d --name hubcache -p 8080:8080 -v hubcache-data:/data hubcache
#
# Override the base image (both stages) with e.g. --build-arg NODE_IMAGE=node:22-bookworm-slim.
# Any CLI arguments replace the default `serve` command, e.g. `docker run --rm hubcache --help`.

ARG NODE_IMAGE=node:24-bookworm-slim

# ---------------------------------------------------------------------------
# Build stage: full dependency tree (dev deps included), compile TypeScript,
# then prune node_modules down to production dependencies.
# ---------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build

# Toolchain for native addons: better-sqlite3 compiles from source when no
# prebuilt binary matches the platform or the prebuilt download is unavailable.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so this layer stays cached while only sources change.
# --ignore-scripts: the root package's `prepare` script runs the TypeScript build,
# which cannot work before the sources are copied in. `npm rebuild` then runs the
# dependencies' own install scripts (better-sqlite3's native build) but not the
# root package's `prepare`.
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts --no-audit --no-fund \
 && npm rebuild

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# ---------------------------------------------------------------------------
# Runtime stage: production node_modules, compiled output, config; runs as the
# unprivileged `node` user of the official image. Application files stay owned
# by root (read-only for the service); only /data is writable.
# ---------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="hubcache" \
      org.opencontainers.image.description="A Hugging Face-compatible caching mirror" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV NODE_ENV=production \
    HUBCACHE_DATA_DIR=/data \
    HUBCACHE_HOST=0.0.0.0 \
    HUBCACHE_PORT=8080

WORKDIR /app

COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY config ./config

# Create /data owned by `node` before declaring the volume, so a fresh named
# volume is initialised with that ownership.
RUN mkdir -p /data && chown node:node /data
VOLUME /data

USER node
EXPOSE 8080

# No curl in slim images: probe /healthz with Node's built-in fetch.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.HUBCACHE_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"

ENTRYPOINT ["node", "dist/src/main.js"]
CMD ["serve"]
