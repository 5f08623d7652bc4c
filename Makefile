# guestcpu — two entry points (see README.md):
#   make demo   install everything and run guestcpu on this host
#   make test   install what the tests need and run lint, type checks and tests
# Both work as root on a fresh Debian 12 machine; apt packages are installed only when missing.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

# Debian packages: QEMU (x86 and s390x), the cpuid tool, and libvirt as a peer for comparisons;
# the tests start their own PostgreSQL server and headless Chromium (tests/pg_support.py, tests/browser_support.py).
DEMO_DEBS := qemu-system-x86 cpuid
TEST_DEBS := qemu-system-x86 qemu-system-misc cpuid libvirt-clients libvirt-daemon postgresql chromium
# libvirt's QEMU driver: the benchmark's reference for a cold capabilities probe.
BENCH_DEBS := $(TEST_DEBS) libvirt-daemon-driver-qemu
# QEMU 10.x from bookworm-backports, unpacked beside the system QEMU (the live tests run on both).
QEMU10_DIR ?= /var/cache/guestcpu-test/qemu-10

.PHONY: demo test lint typecheck pytest bench debs-demo debs-test apt clean qemu10

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(MAKE) --no-print-directory apt DEBS=python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# Install the given Debian packages if any of them is missing (needs root).
apt:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

debs-demo:
	@$(MAKE) --no-print-directory apt DEBS="$(DEMO_DEBS)"

debs-test:
	@$(MAKE) --no-print-directory apt DEBS="$(TEST_DEBS)"

# Idempotent: downloads and unpacks only when $(QEMU10_DIR) has no working QEMU 10.x.
qemu10:
	@sh tools/install-qemu10.sh $(QEMU10_DIR)

demo: debs-demo $(STAMP)
	@echo "== guestcpu $$($(BIN)/guestcpu --version | cut -d' ' -f3): this host's CPU, decoded from CPUID (libvirt capabilities form)"
	$(BIN)/guestcpu host
	@echo "== what this host's QEMU can give a guest (probed once, then cached)"
	$(BIN)/guestcpu caps
	@echo "== can this host's QEMU run a Skylake-Client-v4 guest?  (the deciding features are named)"
	printf "<cpu mode='custom' match='exact'><model>Skylake-Client-v4</model></cpu>\n" > $(VENV)/demo-guest.xml
	$(BIN)/guestcpu compare --hypervisor $(VENV)/demo-guest.xml
	@echo "== a CPU every host of a small fleet (this one + a real server of its own vendor) can run, startable under TCG"
	$(BIN)/guestcpu host > $(VENV)/demo-fleet.xml
	@# the peer is a real CPUID dump of this host's vendor (a fleet never mixes vendors)
	vendor=$$(grep -m1 '^vendor_id' /proc/cpuinfo | sed 's/.*: *//'); \
	case "$$vendor" in AuthenticAMD) peer=EPYC-7601-32-Core;; HygonGenuine) peer=Hygon-C86-7185-32-core;; \
	  *) peer=Xeon-Gold-6148;; esac; \
	echo "peer: $$peer ($$vendor)"; \
	$(BIN)/guestcpu host --cpuid tests/data/libvirt-11.3/cputestdata/x86_64-cpuid-$$peer.xml >> $(VENV)/demo-fleet.xml
	$(BIN)/guestcpu baseline --hypervisor --accel tcg $(VENV)/demo-fleet.xml > $(VENV)/demo-baseline.xml
	cat $(VENV)/demo-baseline.xml
	@echo "== start it paused under TCG and verify what the vCPU really got (check='full')"
	$(BIN)/guestcpu run --accel tcg --verify-only $(VENV)/demo-baseline.xml
	@echo "== pin it once: explicit version, every feature explicit, ABI fingerprint"
	$(BIN)/guestcpu define $(VENV)/demo-baseline.xml --accel tcg --machine pc-q35-7.2 -o $(VENV)/demo.pin.json
	@echo "== start from the pin and verify the vCPU is exactly the pin"
	$(BIN)/guestcpu start $(VENV)/demo.pin.json --verify-only
	@echo "== capture this host, then ask whether guests can move here (the pin, never the source CPU, is compared)"
	$(BIN)/guestcpu capture -o $(VENV)/demo-host.json
	$(BIN)/guestcpu migrate-check $(VENV)/demo.pin.json --to $(VENV)/demo-host.json
	$(BIN)/guestcpu define $(VENV)/demo-guest.xml --accel tcg --machine pc-q35-7.2 -o $(VENV)/demo-sky.pin.json 2>/dev/null
	$(BIN)/guestcpu migrate-check $(VENV)/demo-sky.pin.json --to $(VENV)/demo-host.json; echo "(exit status $$?: refused before anything is sent)"
	@echo "== what differs between the two pinned CPUs"
	$(BIN)/guestcpu diff $(VENV)/demo.pin.json $(VENV)/demo-sky.pin.json | head -12
	@echo "== the model catalog: versions, aliases, what changed"
	$(BIN)/guestcpu model Skylake-Client

lint: $(STAMP)
	$(BIN)/ruff check src tests tools benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) debs-test qemu10
	GUESTCPU_TEST_QEMU10=$(QEMU10_DIR)/usr/bin $(BIN)/pytest -q

test: debs-test qemu10 $(STAMP) lint typecheck pytest

bench: $(STAMP)
	@$(MAKE) --no-print-directory apt DEBS="$(BENCH_DEBS)"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
