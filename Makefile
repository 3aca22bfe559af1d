# Two commands on a machine with only Python: `make demo` (the main job) and `make test`.
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV ?= .venv
# The torch release CI runs on; a range in pyproject.toml lets GPU users get a CUDA build instead.
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin
STAMP = $(VENV)/.misgen-installed

.PHONY: install demo levels experiments smoke test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,video,cluster]"
	touch $(STAMP)

install: $(STAMP)

# The main job: two small populations (arrow on the exit; half the levels decorrelated), the 2x2, verdicts.
demo: $(STAMP)
	$(BIN)/misgen demo

# Level sheets of every distribution of both envs, and exact-planning oracles on them (about 1 minute).
levels: $(STAMP)
	$(BIN)/misgen levels

# Every experiment of docs/results.md at CPU scale, in order (about 80 minutes on 2 cores; each resumes where it stopped).
EXPERIMENTS = arrow_2x2 seed_distribution emergence size_sweep decorrelation keys_chests flipped salience
experiments: $(STAMP)
	for e in $(EXPERIMENTS); do $(BIN)/misgen experiment $$e --jobs 2 || exit 1; done

# Train a PPO agent on 3x3-cell arrow mazes on the CPU (3-4 minutes on 2 cores): configs/experiment/arrow_maze_smoke.yaml
smoke: $(STAMP)
	$(BIN)/misgen train experiment=arrow_maze_smoke

# pytest exits 5 when it selects no test: report it plainly instead of failing.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest selected no test"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/misgen bench

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .hypothesis
