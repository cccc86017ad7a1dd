module github.com/vps-exporter/vps_exporter

go 1.26.8

require (
	golang.org/x/sync v0.24.0
	golang.org/x/time v0.16.0
)
