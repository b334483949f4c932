# syntax=docker/dockerfile:1
# Build stage: install with dev dependencies, compile TypeScript, then drop dev dependencies.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

# Runtime stage: compiled code, production dependencies and the protocol definitions only, run as the
# unprivileged node user. The configuration is the file PARLEY_CONFIG names: `parley run` serves it and
# `parley health` asks /healthz at its admin.listen (loopback by default, so the check runs inside the
# container); mount another file or set PARLEY_CONFIG, and both follow.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
# glibc's malloc told not to hand memory back to the kernel after every burst: with its default trim,
# a bulk transfer churns the heap's top (brk), and the page faults to get it back cost parley up to
# 1.8x the CPU per GiB of a bare pipe; with these two tunables 0.96-1.23x (README, "Bulk under
# limits"). jemalloc, preloaded, cut a handshake's CPU by 10 % but tripled the CPU per GiB.
ENV GLIBC_TUNABLES=glibc.malloc.trim_threshold=134217728:glibc.malloc.top_pad=67108864
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY proto ./proto
COPY config ./config
USER node
EXPOSE 8443
ENV PARLEY_CONFIG=/etc/parley/parley.yaml
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["node", "/app/dist/cli.js", "health", "--timeout", "2s"]
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["run"]
