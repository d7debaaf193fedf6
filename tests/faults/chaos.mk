# make chaos: every fault test on the machine's real PostgreSQL and RabbitMQ (the slow ones
# too: broker stopped and killed, memory alarm, PostgreSQL crash, slow clients, a flood of
# 1,100 slow bodies, multipart header bombs), schemathesis against the live ingress and the
# decoding fuzzers at ten times their examples; then the totals (tests/faults/summary.py).
# Fails when anything acknowledged was lost or doubled.
# Included from the Makefile. Schemathesis lives in its own venv under build/ (not a project
# dependency): it pins its own hypothesis.

CHAOS_DIR := build/chaos
CHAOS_VENV := build/chaos-venv
SCHEMATHESIS_VERSION := 4.32.5

$(CHAOS_VENV)/bin/schemathesis:
	$(PYTHON) -m venv $(CHAOS_VENV)
	$(CHAOS_VENV)/bin/pip install --quiet --disable-pip-version-check \
		schemathesis==$(SCHEMATHESIS_VERSION)

chaos: install $(CHAOS_VENV)/bin/schemathesis ## fault injection and fuzzing on the real services; prints what was lost (must be 0)
	@bash .ci/services
	@rm -rf $(CHAOS_DIR) && mkdir -p $(CHAOS_DIR)
	@start=$$(date +%s); \
	DESKLEDGER_CHAOS=1 DESKLEDGER_CHAOS_SUMMARY=$(CHAOS_DIR)/summary.jsonl \
		$(RUN) pytest tests/faults -p no:cacheprovider; status=$$?; \
	$(RUN) python -m tests.faults.summary $(CHAOS_DIR)/summary.jsonl --since $$start \
		| tee $(CHAOS_DIR)/summary.txt; summary=$${PIPESTATUS[0]}; \
	test $$status -eq 0 -a $$summary -eq 0
