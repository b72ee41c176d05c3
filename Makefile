# pivot: the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo
EXAMPLES := examples/kazoo-ivr.json examples/twiml-ivr.xml examples/seed-pivot-callflow.json examples/seed-say-record.json

.PHONY: run examples cluster test lint fmt bench fuzz build clean deploy-tools docker chart dashboards dashboards-sync deploy-checks

## run: the embedded default — simulator switch, in-memory cluster, API on 127.0.0.1:8080 and a
## demo pivot IVR on number 3004. In another terminal: `./target/debug/pivotd call 3004 --digits 2`.
run: build
	./target/debug/pivotd

## cluster: redis-server, a simulator and three pivotd nodes sharing them, for a person to try.
cluster: build
	./scripts/cluster.sh

## examples: validate the bundled pivot documents with `pivotd check`.
examples: build
	@for f in $(EXAMPLES); do \
	  echo "== pivotd check $$f"; \
	  ./target/debug/pivotd check $$f || exit $$?; \
	done

build:
	$(CARGO) build -p pivotd

## test: every unit, property and black-box test of the workspace.
test:
	$(CARGO) test --workspace --locked

## lint: formatting and clippy, warnings denied.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## Shipping (deploy/, grafana/): their checks need Python packages (a venv under target/) and
## promtool (Debian's `prometheus` package); `.ci/run` installs both on a fresh machine.
VENV ?= target/deploy-venv
PYTHON := $(VENV)/bin/python3

deploy-tools: $(VENV)/.installed
$(VENV)/.installed: scripts/requirements-deploy.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-deploy.txt
	touch $@

## dashboards: check every PromQL expression of the Grafana dashboard and the alerts (promtool)
## against a live /metrics scrape of pivotd, and that the chart ships the current dashboard.
dashboards: build deploy-tools
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ./scripts/check-monitoring.sh --self-test

## dashboards-sync: copy the Grafana dashboards into the chart after editing them.
dashboards-sync:
	mkdir -p deploy/helm/pivot/files/dashboards
	cp grafana/dashboards/*.json deploy/helm/pivot/files/dashboards/

## chart: lint and render the Helm chart for its default values and every ci/ values file,
## validate the manifests against Kubernetes' schemas and values.yaml against its schema.
chart: build deploy-tools
	$(PYTHON) scripts/check-chart.py --rules-out target/pivot-rules.yaml
	$(PYTHON) scripts/check-chart.py --self-test
	@if command -v promtool >/dev/null; then promtool check rules target/pivot-rules.yaml; fi

## docker: build and start the image (deploy/Dockerfile); without a Docker engine, build and
## start the release binary it would package instead (the script says which it did).
docker:
	./scripts/check-docker.sh

deploy-checks: dashboards chart docker

## bench: every benchmark, each printed beside its baseline from the same run, with ratios:
## parse throughput (pivot-flow) and the whole webhook exchange (pivot-webhook).
bench:
	$(CARGO) bench --workspace --locked --bench parse --bench exchange --bench codec --bench lifecycle --bench setup --bench cluster

## fuzz: one minute per parser with cargo-fuzz on stable (`cargo install cargo-fuzz`); not in CI.
FUZZ_SECONDS ?= 60
fuzz:
	cd crates/pivot-flow/fuzz && for t in kazoo twiml response flow_json; do \
	  $(CARGO) fuzz run -s none $$t -- -max_total_time=$(FUZZ_SECONDS) || exit $$?; \
	done

clean:
	$(CARGO) clean
