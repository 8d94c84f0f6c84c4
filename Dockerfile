# varanus in a container, beside a MongoDB server.
# The build stage uses the same scripts as the README and CI
# (scripts/install-deps.sh, scripts/build.sh), so the three cannot drift.
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN BUILD_DIR=/build BUILD_TYPE=Release CMAKE_EXTRA="-DVARANUS_BUILD_TESTS=OFF" bash scripts/build.sh \
 && install -D /build/src/app/varanus /out/usr/local/bin/varanus \
 && install -D /build/src/stub/varanus-stub /out/usr/local/bin/varanus-stub

FROM debian:12-slim
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /out/ /
# A non-root user: varanus needs no privilege (it binds 27018, not a low port).
RUN useradd --system --no-create-home varanus
USER varanus
EXPOSE 27018
# Listen on all interfaces inside the container; the upstream is the
# compose service "mongodb" unless --upstream says otherwise. Events go to
# stdout as JSON lines (docker logs / a log driver collects them).
ENTRYPOINT ["varanus", "--listen", "0.0.0.0:27018"]
CMD ["--upstream", "mongodb:27017"]
