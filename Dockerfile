# Build a static binary, ship it alone on a distroless non-root base.
#   make docker            (stamps version, revision, branch and date; see the Makefile)
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t vps_exporter .
FROM golang:1.26 AS build
ARG VERSION=""
ARG REVISION=unknown
ARG BRANCH=unknown
ARG BUILD_DATE=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version defaults to the VERSION file of the source being built.
RUN v="${VERSION:-$(cat VERSION)}" && p=github.com/prometheus/common/version && \
    CGO_ENABLED=0 go build -trimpath -o /out/vps_exporter \
      -ldflags "-s -w -X $p.Version=$v -X $p.Revision=$REVISION -X $p.Branch=$BRANCH -X $p.BuildUser=docker -X $p.BuildDate=$BUILD_DATE" . && \
    /out/vps_exporter --version

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=""
ARG REVISION=unknown
LABEL org.opencontainers.image.title="vps_exporter" \
      org.opencontainers.image.description="Prometheus exporter and health daemon for VPN.bingo, VPS.org and E2E Networks fleets" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.source="https://github.com/vps-exporter/vps_exporter"
COPY --from=build /out/vps_exporter /bin/vps_exporter
USER 65532:65532
EXPOSE 9877
ENTRYPOINT ["/bin/vps_exporter"]
CMD ["--config.file=/etc/vps_exporter/vps_exporter.yml"]
