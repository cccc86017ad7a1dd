SHELL     := /bin/bash
.SHELLFLAGS := -o pipefail -c
GO        ?= go
BIN       ?= vps_exporter
SIM_BIN   ?= vps_sim
VERSION   ?= $(shell cat VERSION)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
BUILD_DATE ?= $(shell date -u +%Y%m%d-%H:%M:%S)
VPKG      := github.com/prometheus/common/version
LDFLAGS   := -s -w -X $(VPKG).Version=$(VERSION) -X $(VPKG).Revision=$(REVISION) -X $(VPKG).Branch=$(BRANCH) -X $(VPKG).BuildUser=$(shell id -un 2>/dev/null)@$(shell hostname 2>/dev/null) -X $(VPKG).BuildDate=$(BUILD_DATE)
IMAGE     ?= ghcr.io/vps-exporter/vps_exporter
LISTEN    ?= :9877
DEMO_SERVERS ?= 150
SIM_SERVERS ?= 1000
SIM_CONFIG ?= .build/vps_sim.yml
SIM_FLAGS ?=

.PHONY: all build run sim screenshot test test-short rules lint fmt vet bench fuzz clean docker docker-push etcd

all: lint test build

## build: static binaries ./vps_exporter and ./vps_sim (the simulated providers)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(SIM_BIN) ./cmd/vps_sim

## run: the exporter on its built-in simulated fleet (no credentials needed)
run: build
	./$(BIN) --demo --demo.servers=$(DEMO_SERVERS) --web.listen-address=$(LISTEN)

## screenshot: docs/status-page.png, the status page of make run
## (./vps_exporter --demo after a short settle, SETTLE seconds) rendered by
## headless chromium, so that the README's picture cannot drift
SCREENSHOT ?= docs/status-page.png
screenshot: build
	timeout 600 scripts/screenshot ./$(BIN) $(SCREENSHOT)

## sim: the simulated providers as their own process (SIM_SERVERS servers),
## writing the exporter's configuration to SIM_CONFIG; in another terminal:
##   ./vps_exporter --config.file=.build/vps_sim.yml   (docs/simulator.md)
sim: build
	@mkdir -p $(dir $(SIM_CONFIG))
	./$(SIM_BIN) --servers=$(SIM_SERVERS) --config-out=$(SIM_CONFIG) $(SIM_FLAGS)

## test: every test, in stages that say when they start and how long they
## took: lint, the alert rules' unit tests, the packages' tests with the race
## detector, the built binary's tests (simulator, Prometheus, Alertmanager,
## chromium; each test named as it runs), the HA chaos test (3 etcd members
## from scripts/etcd, 3 replicas, vps_sim; skipped without etcd outside CI)
## on its own, and each fuzz target briefly (10,000
## inputs each: a count, not a duration, because Go 1.26's fuzz coordinator
## can fail a duration run at its end with a bare "context deadline
## exceeded", golang/go#75804). About 15 minutes on 2 cores.
STAGES ?= $(CURDIR)/.build/stages.txt
test:
	@mkdir -p $(dir $(STAGES)) && : > $(STAGES)
	@export STAGES=$(STAGES); \
	scripts/stage "lint (gofmt, go vet)" $(MAKE) --no-print-directory lint && \
	scripts/stage "alert rules (promtool)" $(MAKE) --no-print-directory rules && \
	scripts/stage "package tests (-race)" $(GO) test -race -count=1 -timeout 30m $$($(GO) list ./... | grep -vx '$(shell $(GO) list .)') && \
	scripts/stage "binary tests (-race, built exporter)" $(GO) test -race -count=1 -timeout 40m -parallel 3 -skip '^TestHAChaos$$' -v . && \
	scripts/stage "ha chaos (etcd, 3 replicas)" $(GO) test -race -count=1 -timeout 10m -run '^TestHAChaos$$' -v . && \
	scripts/stage "fuzz (10,000 inputs a target)" $(MAKE) --no-print-directory fuzz FUZZTIME=10000x; \
	rc=$$?; printf '\n%-34s %-6s %s\n' stage result took; cat $(STAGES); exit $$rc

## etcd: Debian's etcd-server 3.4 (etcd, etcdctl) unpacked into .build/etcd
## (apt-get download + dpkg -x: no system daemon), for the HA tests
etcd:
	scripts/etcd .build/etcd

## test-short: the packages' unit tests without the race detector and
## without starting any process (no binary, Prometheus or browser): < 1 min
test-short:
	$(GO) test -short -count=1 -timeout 5m ./...

## rules: promtool check and unit-test alerts/ (required under CI; skipped
## with a warning when promtool is not installed elsewhere)
rules:
	@if command -v promtool >/dev/null 2>&1; then \
		promtool check rules alerts/*.rules.yml && promtool test rules alerts/*_test.yml; \
	elif [ -n "$$CI" ]; then \
		echo "promtool not installed (Debian package prometheus); .ci/run installs it" >&2; exit 1; \
	else \
		echo "warning: promtool not installed: alerts/ not checked" >&2; \
	fi

## lint: formatting and vet
lint: fmt vet

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## bench: the benchmarks (see docs/benchmarks.md); compare with
##   benchstat -col /impl -row /servers,/enc -filter '.unit:sec/op' bench.txt
bench:
	$(GO) test -run '^$$' -bench 'Scrape|StoreMemory|Heap100k|UpdateUnchanged|SD|StatusPage' -benchmem -count 6 -timeout 60m ./collector/ ./web/ | tee bench.txt
	$(GO) test -run '^$$' -bench DetailCoverage -benchtime 1x -count 1 -timeout 30m ./collector/ | tee -a bench.txt
	$(GO) test -run '^$$' -bench Refresh1000 -benchtime 1x -count 3 ./providers/vpsorg/ | tee -a bench.txt
	$(GO) test -run '^$$' -bench DemoRSS -benchtime 5x -count 3 . | tee -a bench.txt

## fuzz: each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 1s
# Only the packages whose tests declare a fuzz target are built (listing
# every package's tests compiled them all, etcd's server among them).
fuzz:
	@for dir in $$(grep -l '^func Fuzz' $$(find . -name '*_test.go' -not -path './.build/*') | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -h '^func Fuzz' $$dir/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/'); do \
			echo "== $$dir $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$dir || exit 1; \
		done; \
	done

## docker: the image the Kubernetes manifests name, stamped like make build
docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) --build-arg BRANCH=$(BRANCH) \
		--build-arg BUILD_DATE=$(BUILD_DATE) -t $(IMAGE):v$(VERSION) .

## docker-push: push it (docker login to the registry first)
docker-push: docker
	docker push $(IMAGE):v$(VERSION)

## clean: build outputs only (bench.txt is a checked-in measurement)
clean:
	rm -rf $(BIN) $(SIM_BIN) .build
