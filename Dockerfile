# Build a static binary, ship it alone on a distroless non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o /out/vps_exporter .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/vps_exporter /bin/vps_exporter
USER 65532:65532
EXPOSE 9877
ENTRYPOINT ["/bin/vps_exporter"]
CMD ["--config.file=/etc/vps_exporter/vps_exporter.yml"]
