# hubcache container image. Plain Dockerfile syntax, no `# syntax` line and no BuildKit-only
# feature: BuildKit, the classic builder, buildah and podman build it without fetching a
# Dockerfile frontend (the build needs the Debian mirror and the npm registry, nothing else).
#
#   docker build -t hubcache .
#   docker run -d --name hubcache -p 8080:8080 -v hubcache-data:/data hubcache
#
# The service runs as the image's `node` user, uid 1000 (gid 1000): a bind-mounted /data must be
# writable by it (`chown -R 1000:1000 /srv/hubcache`). Any CLI arguments replace the default
# `serve` command, e.g. `docker run --rm hubcache --help`.
#
# Base image (both stages): a tag moves when it is rebuilt upstream; for reproducible builds pin
# it by digest, e.g. --build-arg NODE_IMAGE=node:24-bookworm-slim@sha256:<digest>, the digest
# from `docker buildx imagetools inspect node:24-bookworm-slim` (or, for a pulled image,
# `docker image inspect --format '{{index .RepoDigests 0}}' node:24-bookworm-slim`).

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
RUN npm ci --ignore-scripts --no-audit --no-fund \
 && npm rebuild

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# After pruning to production dependencies, better-sqlite3 keeps only what loads at run time
# (lib/ and build/Release/better_sqlite3.node): a build from source leaves its object files and
# the SQLite amalgamation (deps/, ~25 MB) behind. Then check that the addon still loads.
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && find node_modules/better-sqlite3/build -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} + \
 && find node_modules/better-sqlite3/build/Release -mindepth 1 ! -name better_sqlite3.node -exec rm -rf {} + \
 && rm -rf node_modules/better-sqlite3/deps node_modules/better-sqlite3/src node_modules/better-sqlite3/binding.gyp \
 && node -e "new (require('better-sqlite3'))(':memory:').close()"

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

# Create /data owned by `node` (uid 1000) before declaring the volume, so a fresh
# named volume is initialised with that ownership. A bind mount keeps the host's
# ownership: it must be writable by uid 1000, or the mirror stops at start saying so.
RUN mkdir -p /data && chown node:node /data
VOLUME /data

USER node
EXPOSE 8080

# `hubcache health` reads the configuration `serve` reads (HUBCACHE_*, HUBCACHE_CONFIG) and
# asks the server at the address it recorded in /data when it started listening, so a port
# given to `serve` on the command line or in a config file is found. The start period covers
# the index reconciliation of a large cache.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "dist/src/main.js", "health"]

ENTRYPOINT ["node", "dist/src/main.js"]
CMD ["serve"]
