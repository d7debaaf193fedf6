# Deployment targets, included by the Makefile (`-include deploy/deploy.mk`).
# `up`/`down` need Docker with the compose plugin; `image-test` works without a Docker engine.

COMPOSE := docker compose -f deploy/compose.yaml

.PHONY: up down image-test

# No --wait: some compose versions count the finished one-shot `migrate` as a failure
# (docker/compose#10596); `ps` shows each service's health instead.
up: ## start the compose stack (needs Docker and DESKLEDGER_SECRETS in the environment)
	$(COMPOSE) up --build --detach
	$(COMPOSE) ps

# compose requires DESKLEDGER_SECRETS on every command, even one that stops the stack.
down: ## stop the compose stack; its named volumes (data) are kept
	DESKLEDGER_SECRETS="$${DESKLEDGER_SECRETS:-unused-when-stopping}" $(COMPOSE) down

image-test: ## build deploy/Dockerfile with podman on a debootstrapped base and check the image (minutes)
	@bash deploy/image-test.sh
