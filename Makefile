# smartsheet-oauth-broker: every command a developer or CI runs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
DEPLOY_VENV := .venv-deploy
IAC_VENV    := .venv-iac
PY          := $(VENV)/bin/python
SAM         := $(DEPLOY_VENV)/bin/sam
PYTEST_ARGS ?=
ARGS        ?=
STACK       ?=
TRANSLATED  := .aws-sam/translated/template.json
IAM_SIM     := tests/support/iam_simulate
AXE         := tests/support/axe
# What the tests need from the system, not PyPI (Chromium; Node.js and npm): installed from Debian's packages when this
# user may (root, or sudo without a prompt), else the step prints the exact command to run and fails.
SYSTEM_TOOLS := infra/scripts/system_tools.sh
FRONT_DOOR  := infra/front-door/web-acl.yaml
# The SAM CLI never sends telemetry from here; checkov neither phones home nor checks for updates.
export SAM_CLI_TELEMETRY := 0
export CKV_SKIP_PACKAGE_UPDATE_CHECK := true
export BC_SKIP_MAPPING := TRUE

.PHONY: help venv deploy-venv iac-venv iam-simulate axe chromium lock dev demo refresh test unit lint typecheck validate build \
        deploy set-client-secret admin doctor bench cost reliability fuzz clean

help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# Every venv installs from a hash-locked file (make lock writes them from the *.in lists): pip refuses any file
# whose hash the lock does not name, and wheels only, since an sdist's build dependencies escape hash checking.
PIP_LOCKED := pip install --quiet --disable-pip-version-check --require-hashes --only-binary :all:

$(VENV)/.installed: requirements.txt functions/requirements.txt
	@py=$$(infra/scripts/find_python.sh) || exit 1; \
	  [ -x $(PY) ] || "$$py" -m venv $(VENV); \
	  $(PY) -m $(PIP_LOCKED) -r requirements.txt
	@touch $@

$(DEPLOY_VENV)/.installed: requirements-deploy.txt
	@py=$$(infra/scripts/find_python.sh) || exit 1; \
	  [ -x $(DEPLOY_VENV)/bin/python ] || "$$py" -m venv $(DEPLOY_VENV); \
	  $(DEPLOY_VENV)/bin/python -m $(PIP_LOCKED) -r requirements-deploy.txt
	@touch $@

$(IAC_VENV)/.installed: requirements-iac.txt
	@py=$$(infra/scripts/find_python.sh) || exit 1; \
	  [ -x $(IAC_VENV)/bin/python ] || "$$py" -m venv $(IAC_VENV); \
	  $(IAC_VENV)/bin/python -m $(PIP_LOCKED) -r requirements-iac.txt
	@touch $@

# Test-only: the IAM policy simulator the policy tests evaluate the template with (tests/support/iam_simulator.py),
# installed from its lockfile with every package's integrity hash checked and no install scripts run.
$(IAM_SIM)/node_modules/.installed: $(IAM_SIM)/package.json $(IAM_SIM)/package-lock.json
	@$(SYSTEM_TOOLS) npm
	cd $(IAM_SIM) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

# Test-only: axe-core, the accessibility engine the browser tests run on the broker's pages, pinned by its lockfile's
# integrity hash and read from node_modules (never fetched while tests run).
$(AXE)/node_modules/.installed: $(AXE)/package.json $(AXE)/package-lock.json
	@$(SYSTEM_TOOLS) npm
	cd $(AXE) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

venv: $(VENV)/.installed ## create .venv with the pinned dependencies

iam-simulate: $(IAM_SIM)/node_modules/.installed ## install the IAM policy simulator the policy tests use (Node.js, npm ci)

axe: $(AXE)/node_modules/.installed ## install axe-core for the browser tests' accessibility check (npm ci)

chromium: ## the system's Chromium for the browser tests (Debian's package; installed if missing, or says how)
	@$(SYSTEM_TOOLS) chromium

deploy-venv: $(DEPLOY_VENV)/.installed ## create .venv-deploy with the SAM CLI

iac-venv: $(IAC_VENV)/.installed ## create .venv-iac with the security IaC checker (checkov)

# The Lambda artifact's lock is resolved for the functions' platform (template.yaml: python3.13, arm64; Amazon Linux
# 2023's glibc 2.34) whatever machine runs this; the others for any platform. Each lock lists every file's hash of
# each pinned release. The dev lock takes the runtime packages at the artifact's versions (-c in requirements.in).
LOCK := $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.13 --custom-compile-command "make lock"

lock: venv ## write the hash-locked requirements*.txt from the hand-edited *.in lists (ARGS=--upgrade moves every pin)
	$(LOCK) $(ARGS) --python-platform aarch64-manylinux_2_34 -o functions/requirements.txt functions/requirements.in
	$(LOCK) $(ARGS) --universal -o requirements.txt requirements.in
	$(LOCK) $(ARGS) --universal -o requirements-deploy.txt requirements-deploy.in
	$(LOCK) $(ARGS) --universal -o requirements-iac.txt requirements-iac.in

dev: venv ## run the broker locally: embedded AWS + Smartsheet emulator on http://127.0.0.1:3000
	$(PY) -m infra.local.dev $(ARGS)

demo: venv ## run the whole sign-in and refresh story headless and print each step
	PYTHONPATH=functions:. $(PY) -m infra.local.demo $(ARGS)

refresh: venv ## trigger the scheduled refresh sweep on the running `make dev` stack
	$(PY) -m infra.local.dev refresh $(ARGS)

admin: venv ## operate a broker: ARGS="[--stack NAME] list|show ID|refresh ID|disconnect ID|sweep|health|migrate-store --to S" (scripts: python -m infra.admin)
	PYTHONPATH=functions $(PY) -m infra.admin $(if $(STACK),--stack $(STACK)) $(ARGS)
# make exits 2 whenever the CLI fails; scripts that read its exit status (0/1/2) run .venv/bin/python -m infra.admin.

doctor: venv ## after a deploy: is the stack working? a checklist with fixes (STACK=name; none: make dev's)
	PYTHONPATH=functions $(PY) -m infra.admin $(if $(STACK),--stack $(STACK)) doctor $(ARGS)
# make exits 2 whenever a recipe fails; its "Error N" line carries the doctor's own status (0-3, see ARGS=--help).

lint: venv iac-venv ## ruff, mypy, cfn-lint and checkov (on template.yaml and its SAM translation)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy functions infra tests
	$(VENV)/bin/cfn-lint template.yaml $(FRONT_DOOR)
	$(PY) -m infra.scripts.sam_translate template.yaml --output $(TRANSLATED)
	$(VENV)/bin/cfn-lint $(TRANSLATED)
	$(IAC_VENV)/bin/checkov --config-file infra/checkov.yaml --file template.yaml --file $(TRANSLATED) --file $(FRONT_DOOR)

typecheck: venv
	$(VENV)/bin/mypy functions infra tests

test: venv iam-simulate axe chromium lint ## every check and every test (unit, integration, e2e, browser, reliability)
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv iam-simulate ## the fast tests only (no servers, no browser)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

fuzz: venv ## the security property tests with thousands of examples each (make test runs 120 per property)
	SECURITY_FUZZ_EXAMPLES=$${SECURITY_FUZZ_EXAMPLES:-3000} $(PY) -m pytest tests/security/test_fuzz.py --timeout=3600 $(PYTEST_ARGS)

reliability: venv ## races, faults, crashes, revocations, 500 sign-ins at once: the issue's sizes and beyond; prints a table
	RELIABILITY_SCALE=large $(PY) -m pytest tests/reliability --timeout=3600 $(PYTEST_ARGS)

bench: venv ## benchmarks, not in `make test` (~3 min on an idle machine): cold start, calls, latency, sweep, size
	PYTHONPATH=functions:. $(PY) -m tests.bench $(ARGS)

CONNECTIONS ?= 1000000
STORE       ?= dynamodb
cost: venv ## the monthly AWS bill by service: CONNECTIONS=1000000 STORE=dynamodb|secretsmanager (from make bench's calls)
	PYTHONPATH=functions:. $(PY) -m infra.scripts.cost --connections $(CONNECTIONS) --store $(STORE)

validate: deploy-venv ## sam validate --lint
	$(SAM) validate --lint --template template.yaml

# sam build (aws-lambda-builders' python_pip) runs pip twice on functions/requirements.txt: `pip download -r` for this
# machine, which checks the lock's hashes, then again, by name==version alone, each package that needs an arm64
# wheel, which checks nothing. So both passes may take files only from this folder (PIP_NO_INDEX), which pip fills
# here with the lock's hashes required: this machine's wheels and the functions' (CPython 3.13, manylinux arm64).
LAMBDA_WHEELS := .aws-sam/locked-wheels
LAMBDA_PLATFORMS := $(foreach tag,manylinux2014 manylinux_2_17 manylinux_2_28 manylinux_2_34,--platform $(tag)_aarch64)

$(LAMBDA_WHEELS)/.checked: functions/requirements.txt
	@py=$$(infra/scripts/find_python.sh) || exit 1; rm -rf $(LAMBDA_WHEELS); \
	  download="$$py -m pip download --quiet --disable-pip-version-check --require-hashes --only-binary :all:"; \
	  $$download --dest $(LAMBDA_WHEELS) -r functions/requirements.txt && \
	  $$download --dest $(LAMBDA_WHEELS) $(LAMBDA_PLATFORMS) --implementation cp --python-version 3.13 \
	    -r functions/requirements.txt
	@touch $@

build: deploy-venv $(LAMBDA_WHEELS)/.checked ## sam build (never in a container): .aws-sam/build
	@py=$$(infra/scripts/find_python.sh) || exit 1; \
	  PATH="$$(dirname "$$py"):$$PATH" PIP_NO_INDEX=1 PIP_FIND_LINKS="$(CURDIR)/$(LAMBDA_WHEELS)" \
	  $(SAM) build --template template.yaml && \
	  "$$py" -m infra.scripts.compile_bytecode .aws-sam/build
# Lambda's /var/task is read-only, so without shipped bytecode every cold start recompiles every module
# (make bench measured ~2x); compiled as /var/task, a traceback in Lambda shows its source lines.

deploy: build ## sam build, then sam deploy (add ARGS=--guided the first time)
	$(SAM) deploy $(ARGS)

set-client-secret: venv ## put the Smartsheet client secret into the deployed stack's secret (STACK=name)
	$(PY) -m infra.scripts.set_client_secret $(if $(STACK),--stack $(STACK)) $(ARGS)

clean: ## remove the venvs and build output
	rm -rf $(VENV) $(DEPLOY_VENV) $(IAC_VENV) $(IAM_SIM)/node_modules $(AXE)/node_modules .aws-sam .mypy_cache .ruff_cache .hypothesis
