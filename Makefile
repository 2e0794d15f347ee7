# Eddy: the two commands of the README, and a few helpers.
SWIFT ?= swift
DATA ?= ./data

.PHONY: run test lint deps build release bench-append format clean

## make run: install what is missing, build a release, start the embedded default until Ctrl-C.
run: deps release
	.build/release/eddy up --data $(DATA)

## make test: the same set-up, then the format check, the build and every test (scripts/test.sh: the tests that
## drive eddy processes run in a test process of their own, the failures are repeated at the end, a process the
## tests left running fails the run, and the time of each phase is printed last).
test:
	SWIFT=$(SWIFT) scripts/test.sh

## make lint: swift format's check against .swift-format (make format fixes what it reports).
lint:
	$(SWIFT) format lint --strict --recursive Sources Tests Benchmarks/Benchmarks

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product eddy

## make bench-append: the append benchmark against a fresh release store (see docs/benchmarks.md).
bench-append: release
	scripts/bench-append.sh

format:
	$(SWIFT) format --in-place --recursive Sources Tests Benchmarks/Benchmarks

clean:
	rm -rf .build
