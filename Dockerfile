# varanus in a container. Three stages:
#   build   compiles varanus and varanus-stub with the same scripts as the
#           README and CI (scripts/install-deps.sh, scripts/build.sh)
#   stub    varanus-stub alone (an upstream for tests and demos):
#           docker build --target stub -t varanus-stub .
#   varanus the runtime image (the default target): the executable, its
#           shared libraries, the licenses; no compiler, no stub
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN BUILD_DIR=/build BUILD_TYPE=Release CMAKE_EXTRA="-DVARANUS_BUILD_TESTS=OFF" bash scripts/build.sh \
 && install -D -m 0755 /build/src/app/varanus /out/varanus/usr/local/bin/varanus \
 && install -D -m 0644 LICENSE /out/varanus/usr/share/doc/varanus/LICENSE \
 && install -D -m 0644 NOTICE /out/varanus/usr/share/doc/varanus/NOTICE \
 && install -D -m 0644 /usr/share/doc/libboost1.81-dev/copyright \
      /out/varanus/usr/share/doc/varanus/third-party/boost.copyright \
 && install -D -m 0644 /usr/share/doc/nlohmann-json3-dev/copyright \
      /out/varanus/usr/share/doc/varanus/third-party/nlohmann-json.copyright \
 && install -D -m 0644 config/container.json /out/varanus/etc/varanus/varanus.json \
 && install -D -m 0755 /build/src/stub/varanus-stub /out/stub/usr/local/bin/varanus-stub \
 && install -D -m 0644 LICENSE /out/stub/usr/share/doc/varanus/LICENSE \
 && install -D -m 0644 NOTICE /out/stub/usr/share/doc/varanus/NOTICE

FROM debian:12-slim AS stub
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /out/stub/ /
USER 10001:10001
EXPOSE 27017
ENTRYPOINT ["varanus-stub"]
CMD ["--listen", "0.0.0.0:27017"]

FROM debian:12-slim AS varanus
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /out/varanus/ /
# A numeric non-root user, so Kubernetes' runAsNonRoot can verify it;
# varanus needs no privilege (27018 and 9108 are not low ports).
USER 10001:10001
# Configuration: a config file (mount yours over /etc/varanus/varanus.json,
# or point VARANUS_CONFIG elsewhere) and VARANUS_* variables, which win over
# the file. The two set here are the container's addresses: drivers on
# 27018, the admin endpoint (/metrics, /healthz, /stats) on 9108, on every
# interface of the container's network. No flag in ENTRYPOINT: a flag would
# override both the file and the environment.
ENV VARANUS_CONFIG=/etc/varanus/varanus.json \
    VARANUS_LISTEN=0.0.0.0:27018 \
    VARANUS_ADMIN=0.0.0.0:9108
EXPOSE 27018 9108
# GET /healthz on the admin endpoint: varanus runs and reaches its upstream.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["varanus", "healthcheck"]
# SIGTERM: idle connections close at once, requests in flight get the
# grace period (10 s by default; give `docker stop -t` more than that).
STOPSIGNAL SIGTERM
ENTRYPOINT ["varanus"]
