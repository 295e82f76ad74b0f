# The two commands a new user needs: `make run` (set up + dvc repro) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PORT ?= 3000
UI_PORT ?= 5000
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: install run test serve ui bench bench-scale bench-serving bench-serving-cost loop report lint docs-check tracking-server dvc-remote mutate

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev,team,scale,profile]'
	touch $@

install: $(VENV)/.installed  ## create the virtual environment and install pinned dependencies

run: install  ## run the whole pipeline on the configured source (default: synthetic)
	dvc repro

TEST_WORKERS ?= 2

test: install  ## run the test suite on TEST_WORKERS processes (one BLAS/OpenMP thread each: tests start servers and stages beside pytest)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

TOKEN_FILE ?= .api_token

serve: install  ## serve the last `dvc repro` on http://localhost:$(PORT) (/feedback, /reload: token in .api_token)
	@test -n "$$LADDER_API_TOKEN" || test -s $(TOKEN_FILE) || \
		(umask 077 && $(PY) -c "import secrets; print(secrets.token_urlsafe(32))" > $(TOKEN_FILE))
	LADDER_API_TOKEN="$${LADDER_API_TOKEN:-$$(cat $(TOKEN_FILE))}" \
		bentoml serve serving.service:Recommender --port $(PORT)

tracking-server: install  ## PostgreSQL + S3 (moto) + mlflow server on :5000; then `source .team/env`
	$(PY) -m pipelines.team_stack up --dir .team

dvc-remote: install  ## DVC's default remote → s3://ladder/dvc at $$MLFLOW_S3_ENDPOINT_URL (source .team/env)
	$(PY) -m pipelines.team_stack dvc-remote

ui: install  ## open the MLflow UI on http://localhost:$(UI_PORT)
	mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port $(UI_PORT)

bench: install  ## ingest + features benchmark on 10 million synthetic events
	$(PY) benchmarks/ingest_features.py

bench-serving-cost: install  ## /recommend vs a no-op endpoint, 1 and 2 workers, c = 1 8 32 (~4 min)
	test -e data/serving/CURRENT || OMP_NUM_THREADS=1 dvc repro index
	OMP_NUM_THREADS=1 $(PY) benchmarks/serving_cost.py

bench-scale: install  ## ingest + features polars vs ray (10M events); GNOLR training dense/sparse/DDP×2 (100k, 1M ids)
	$(PY) benchmarks/scale_data.py $(BENCH_SCALE_ARGS)
	OMP_NUM_THREADS=1 $(PY) benchmarks/scale_train.py $(BENCH_SCALE_TRAIN_ARGS)

bench-serving: bench-serving-cost  ## + /recommend under load (100k and 1M items) and the FAISS index kinds
	OMP_NUM_THREADS=1 $(PY) benchmarks/serving_load.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/index_kinds.py

loop: install  ## closed-loop demo: simulated users ↔ bentoml serve ↔ dvc repro (≈15 min)
	$(PY) -m experiments.closed_loop --rounds 3

report: install  ## HTML comparison report of the last pipeline run (reports/report.html)
	dvc repro report

lint: install
	ruff check . && ruff format --check .

docs-check: install  ## run every command of README.md in order on a fresh clone (≈ make run + make test)
	$(PY) tests/docs_check.py

mutate: install  ## mutation testing of the core modules (mutmut, ~4 min on 2 cores from an empty cache) → reports/mutation.md
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[mutation]'
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2
	$(PY) tests/mutation_report.py --note "Filled by \`make mutate\` (mutmut run --max-children 2; a mutant already decided in mutants/ keeps its result unless its function changed: delete mutants/ for a clean run)." > reports/mutation.md.tmp && mv reports/mutation.md.tmp reports/mutation.md
