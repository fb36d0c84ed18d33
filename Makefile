# rtx.dr — the two commands a newcomer needs:
#   make demo   builds everything from a bare machine and runs the main job on the lab
#   make test   runs all tests (unit, lint, sanity, Molecule against real containers)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
INVENTORY ?= inventories/lab/hosts.yml
LAB_STATE := $(CURDIR)/.lab
COLLECTION_LINK := $(LAB_STATE)/collections/ansible_collections/rtx/dr
SANITY_ROOT := /tmp/rtx-dr-sanity/ansible_collections/rtx/dr

.PHONY: help setup venv tools engine image lab lab-up lab-down aws demo test unit lint sanity molecule build bench bench-restore bench-failover bench-region bench-wal chaos clean

help:
	@echo "make demo      - set up the lab from a bare machine and run the main job"
	@echo "make test      - all tests (unit, ansible-lint, ansible-test sanity, molecule)"
	@echo "make lab       - (re)build the lab: engine, image, containers, AWS endpoint, site.yml"
	@echo "make lab-down  - remove the lab's containers, network and AWS endpoint"
	@echo "make build     - build the collection tarball"
	@echo "make bench     - backup benchmark (ours vs pgBackRest vs pg_basebackup)"
	@echo "make bench-restore - restore benchmark (rtx.dr.backup_restore vs pgbackrest restore, same data and endpoint)"
	@echo "make bench-failover - failover RTO benchmark on the running lab (failover.yml vs manual pg_promote)"
	@echo "make bench-region - region failover RTO on the running lab (region_failover.yml vs the seed's 3 commands)"
	@echo "make bench-wal - WAL archiving under pgbench load (rtx.dr WAL agent vs pgBackRest archive-push sync/async)"
	@echo "make chaos     - chaos tests on the running lab: each fault once, its alerts must fire, always cleaned up"

setup: venv tools $(COLLECTION_LINK)

# promtool, amtool and alertmanager (tests of the alerting role) from Debian's
# `prometheus` and `prometheus-alertmanager` packages, unpacked, not installed:
# no root needed when the apt lists are there (as root, missing lists are fetched).
# Debian's alertmanager reads its default templates from a fixed path,
# /usr/share/prometheus/alertmanager: as root they are put there (the files the
# package would install; an existing installation is left alone).
TOOLS_BIN := $(LAB_STATE)/tools/bin
TOOLS_STAMP := $(LAB_STATE)/tools/.installed
AM_SHARE := /usr/share/prometheus/alertmanager
tools: $(TOOLS_STAMP)
$(TOOLS_STAMP):
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cd "$$tmp"; \
	if ! apt-get download -q prometheus prometheus-alertmanager >download.log 2>&1; then \
	  if [ "$$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get download -q prometheus prometheus-alertmanager; \
	  else cat download.log; echo "make tools: apt-get download failed; run 'apt-get update' as root, then make tools"; exit 1; fi; \
	fi; \
	for deb in prometheus_*.deb prometheus-alertmanager_*.deb; do dpkg-deb -x "$$deb" root; done; \
	mkdir -p $(TOOLS_BIN); \
	install -m 0755 root/usr/bin/promtool root/usr/bin/amtool $(TOOLS_BIN)/; \
	install -m 0755 root/usr/bin/prometheus-alertmanager $(TOOLS_BIN)/alertmanager; \
	if [ ! -f $(AM_SHARE)/default.tmpl ]; then \
	  if [ "$$(id -u)" -eq 0 ]; then install -D -m 0644 -t $(AM_SHARE) root$(AM_SHARE)/*.tmpl; \
	  else echo "make tools: WARNING alertmanager needs $(AM_SHARE)/default.tmpl: run make tools as root"; fi; \
	fi; \
	$(TOOLS_BIN)/promtool --version >/dev/null && $(TOOLS_BIN)/amtool --version >/dev/null 2>&1; \
	touch $@; echo "make tools: promtool, amtool, alertmanager in $(TOOLS_BIN)"

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn $(CURDIR) $@

engine:
	lab/engine.sh

image: engine
	lab/image.sh

lab-up: setup image
	LAB_IMAGE=$$(source lab/common.sh; echo $$LAB_IMAGE) \
	  ansible-playbook -i $(INVENTORY) lab/lab.yml -e lab_state=present
	lab/aws.sh start

lab: lab-up
	ansible-playbook -i $(INVENTORY) playbooks/site.yml

lab-down: setup
	-lab/aws.sh stop
	-@docker info >/dev/null 2>&1 && ansible-playbook -i $(INVENTORY) lab/lab.yml -e lab_state=absent

demo: lab
	ansible-playbook -i $(INVENTORY) playbooks/replication_status.yml
	ansible-playbook -i $(INVENTORY) playbooks/backup_full.yml
	ansible-playbook -i $(INVENTORY) playbooks/verify_backups.yml -e verify_select=all
	# Restore drill (dr_drill.yml drill=restore): the latest backup + archived WAL restored into a scratch server on the
	# west standby from the replica bucket in us-west-2 (docs/cross_region.md), checked, judged against the objectives, removed.
	ansible-playbook -i $(INVENTORY) playbooks/dr_drill.yml -e drill=restore
	# Alert rules + Alertmanager routing to SNS (into .lab/monitoring), and the health of every host.
	ansible-playbook -i $(INVENTORY) playbooks/monitoring.yml
	ansible-playbook -i $(INVENTORY) playbooks/health_check.yml
	# The monthly partial DR drill: a planned switchover to the synchronous standby and back while the demo app
	# writes; every acknowledged commit must be on the final primary (dr_drill.yml drill=failover).
	ansible-playbook -i $(INVENTORY) playbooks/dr_drill.yml -e drill=failover -e drill_confirm=rtx-lab
	# The weekly DR report (Markdown, HTML with a chart, JSON) into .lab/reports.
	ansible-playbook -i $(INVENTORY) playbooks/dr_report.yml

# The unit tests are independent (each starts its own PostgreSQL, moto and
# ansible-playbook in its own temporary directory): one worker per core, at
# most UNIT_WORKERS (UNIT_WORKERS=0 runs them in this process, for pdb).
UNIT_WORKERS ?= 4
unit: setup
	$(BIN)/python -m pytest tests/unit tests/playbooks -q $(if $(filter 0,$(UNIT_WORKERS)),,-n auto --maxprocesses $(UNIT_WORKERS))

# ansible-lint and molecule may leave an installed snapshot of rtx.dr in
# ~/.ansible/collections that shadows the working tree: remove only that.
lint: setup
	rm -rf $(HOME)/.ansible/collections/ansible_collections/rtx/dr
	ANSIBLE_COLLECTIONS_PATH=$(LAB_STATE)/collections $(BIN)/ansible-lint --profile production

# ansible-test --venv bootstraps pip with a script from a host that is not
# reachable here; lab/ansible-test-get-pip.py does the same with ensurepip + PyPI.
GET_PIP_CACHE := $(HOME)/.ansible/test/cache/get_pip_24_2.py
$(GET_PIP_CACHE): lab/ansible-test-get-pip.py
	mkdir -p $(dir $@) && cp $< $@

sanity: setup $(GET_PIP_CACHE)
	rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -C $(SANITY_ROOT) -xf -
	cd $(SANITY_ROOT) && $(BIN)/ansible-test sanity --venv --python 3.11 --color no

# Molecule's network exists before `molecule test` so that its AWS endpoint
# (moto on the network's gateway, port 5001) can start first; each scenario
# gets a fresh network and endpoint. One scenario: make molecule MOLECULE_SCENARIOS=failover
MOLECULE_NET := rtx-molecule
MOLECULE_SCENARIOS ?= default failover
molecule: setup image
	@for scenario in $(MOLECULE_SCENARIOS); do \
	  docker ps -aq --filter label=owner=molecule | xargs -r docker rm -f >/dev/null; \
	  docker network inspect $(MOLECULE_NET) >/dev/null 2>&1 || docker network create \
	    --subnet 172.30.78.0/24 --gateway 172.30.78.1 --label owner=molecule $(MOLECULE_NET) >/dev/null; \
	  lab/aws.sh start 172.30.78.1 5001 || exit 1; \
	  $(BIN)/molecule reset -s $$scenario >/dev/null 2>&1; \
	  LAB_IMAGE=$$(source lab/common.sh; echo $$LAB_IMAGE) $(BIN)/molecule test -s $$scenario; \
	  rc=$$?; lab/aws.sh stop 172.30.78.1 5001; \
	  [ $$rc -eq 0 ] || { echo "molecule scenario $$scenario failed"; exit $$rc; }; \
	done

test: unit lint sanity molecule

# Backup benchmark: ours vs pgBackRest vs raw pg_basebackup, same data and
# endpoint (about 6 minutes; results in docs/benchmarks.md).
bench: setup image
	bench/backup/run.sh

# Restore benchmark: bench/backup/run.sh with the restore variants (rtx.dr.backup_restore vs
# pgbackrest restore of the backups each made in the same run; an estimated ~5 minutes, not yet
# measured at full size; docs/benchmarks.md).
bench-restore: setup image
	bench/restore/run.sh

# Failover benchmark on the running lab (make lab): RTO of playbooks/failover.yml vs a manual
# pg_promote(), BENCH_ROUNDS (default 5) rounds each; results in docs/benchmarks.md.
bench-failover: setup
	bench/failover/run.sh

bench-region: setup
	bench/region/run.sh

# WAL archiving benchmark: the rtx.dr WAL agent (archive_command of backup_schedule) vs pgBackRest
# archive-push, synchronous and async (process-max 2), under the same pgbench load (~12 min; docs/benchmarks.md).
bench-wal: setup image
	bench/wal/run.sh

# Chaos tests on the running lab (make lab): each fault once, detected by the alert rules and removed
# (docs/runbooks/chaos.md; about 5 minutes).
chaos: setup
	ansible-playbook -i $(INVENTORY) playbooks/chaos.yml -e chaos_enabled=true -e chaos_confirm=rtx-lab

build: setup
	mkdir -p build
	ansible-galaxy collection build --force --output-path build .

clean: lab-down
	rm -rf build
