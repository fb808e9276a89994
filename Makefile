# The two entry points: `make demo` runs the main job, `make test` the whole check.
# Each creates the virtualenv on first use from the pinned constraints.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_VENV := .venv-bench
SMOLAGENTS := smolagents==1.26.0

NPM_STAMP := node_modules/.installed
CONTRACT_TAG   := contract-v1
CONTRACT_IMAGE := protos/released/smolmesh-v1.binpb
NODE_CLIENT := examples/clients/node

.PHONY: demo test lint protos check-protos typecheck unit postgres container-engine containers bench constraints clean contract-image

# The main job: start the seed mesh (one process per agent), run its task, stop it.
demo: $(STAMP)
	$(BIN)/mesh demo

test: lint check-protos typecheck unit

lint: $(STAMP) $(NPM_STAMP)
	$(BIN)/ruff check mesh services examples tests bench scripts
	$(BIN)/ruff format --check mesh services examples tests bench scripts
	npx --no-install buf lint protos
	npx --no-install buf format protos --diff --exit-code
	npx --no-install buf breaking protos --against $(CONTRACT_IMAGE)

# The released contract that `make lint` keeps compatible, rebuilt from its git tag
# (kept in the tree so that any checkout, shallow or tagless, can check against it).
contract-image: $(NPM_STAMP)
	npx --no-install buf build '.git#tag=$(CONTRACT_TAG),subdir=protos' -o $(CONTRACT_IMAGE)

# Regenerate mesh/_proto/ from protos/ (commit the result).
protos: $(STAMP)
	$(BIN)/python scripts/genproto.py

check-protos: $(STAMP)
	$(BIN)/python scripts/genproto.py --check

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(NPM_STAMP) $(NODE_CLIENT)/node_modules/.installed postgres container-engine browser
	$(BIN)/pytest

# The tests start PostgreSQL servers of their own: Debian's server binaries, installed if missing.
postgres:
	scripts/ensure_postgres.sh

# The container tests build the image and run the mesh under podman: Debian's, installed if missing.
container-engine:
	scripts/ensure_containers.sh

# The web console's tests drive headless Chromium (Selenium): Debian's, installed if missing.
.PHONY: browser
browser:
	scripts/ensure_browser.sh

# The seed mesh in containers, offline: the Python base image from Debian packages (no registry
# is reachable here), the image, one container per Deployment of deploy/k8s/overlays/dev with
# its privileges, the seed task from a client container, then everything stopped.
containers: $(STAMP) container-engine
	$(BIN)/python scripts/mesh_containers.py seed

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund
	touch $@

# Benchmarks, by hand. smolagents is installed here only, for comparison.
bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/agent_loop.py
	$(BENCH_VENV)/bin/python bench/sandbox.py
	$(BENCH_VENV)/bin/python bench/mesh_services.py
	$(BENCH_VENV)/bin/python bench/replicas.py
	$(BENCH_VENV)/bin/python bench/sustained_load.py
	$(BENCH_VENV)/bin/python bench/project_startup.py
	$(BENCH_VENV)/bin/python bench/lead_enrichment.py
	$(BIN)/python bench/containers.py  # kubectl is in the dev venv

$(BENCH_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -c constraints.txt -e . '$(SMOLAGENTS)'
	touch $@

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Re-pin every dependency after changing pyproject.toml (review the diff).
constraints:
	rm -rf /tmp/mesh-pin && $(PYTHON) -m venv /tmp/mesh-pin
	/tmp/mesh-pin/bin/pip install --quiet -e '.[dev]'
	/tmp/mesh-pin/bin/pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

clean:
	rm -rf $(VENV) $(BENCH_VENV) node_modules $(NODE_CLIENT)/node_modules .pytest_cache .mypy_cache .ruff_cache
