# The two commands a newcomer needs: `make run` and `make test`. Both set up from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_EXTRAS ?= local,piper,voice
TEST_EXTRAS ?= dev,local,piper

.PHONY: setup setup-dev run chat test lint typecheck security deploy-check check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras, so `make run` after `make test` installs nothing again.
$(VENV)/.installed-%: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[$*]"
	touch $@

setup: $(VENV)/.installed-$(RUN_EXTRAS)

setup-dev: $(VENV)/.installed-$(TEST_EXTRAS)

# The server with the embedded default agent on http://127.0.0.1:8080 (browser, API, Twilio).
run: setup
	$(BIN)/voxline serve

# The same agent in the terminal.
chat: setup
	$(BIN)/voxline chat

test: setup-dev
	$(BIN)/python -m pytest -q

lint: setup-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup-dev
	$(BIN)/mypy

# Static security checks: any medium or high severity finding fails. A finding that is accepted
# carries `# nosec BXXX: why` on its line, so the reason is reviewed with the code.
security: setup-dev
	$(BIN)/bandit -r src -q -ll

# The container image and the Kubernetes manifests (docs/deploy.md): lint only, no build.
K8S_VERSION ?= 1.30.0
K8S_MANIFESTS := $(filter-out deploy/k8s/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))

deploy-check: setup-dev
	$(BIN)/hadolint --failure-threshold style Dockerfile
	$(BIN)/kubernetes-validate --strict --quiet --kubernetes-version $(K8S_VERSION) $(K8S_MANIFESTS)

check: lint typecheck security test deploy-check

bench: setup-dev
	$(BIN)/python benchmarks/local_models.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
