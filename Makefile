# pivot: the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo
EXAMPLES := examples/kazoo-ivr.json examples/twiml-ivr.xml examples/seed-pivot-callflow.json examples/seed-say-record.json

.PHONY: run examples cluster test lint fmt bench fuzz build clean

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
