# provision: the PostgreSQL extension (PGXS), the webhook listener and the
# dispatcher.
#
#   make                 build the extension, listener/provision-listener and
#                        dispatcher/provision-dispatcher
#   make install         install all three (PG_CONFIG=..., PREFIX=... override)
#   make run             private cluster under .run/ and a listener on :8080
#                        (and a dispatcher when a repository and a token are set)
#   make test            every suite against private clusters it starts itself
#   make test-cassert    pg_regress and isolation on PostgreSQL built with
#                        assertions (make test-cassert-valgrind: under valgrind)
#   make installcheck    the pg_regress and isolation suites on a running server

EXTENSION   = provision
EXTVERSION  = 1.1

MODULE_big  = provision
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard extension/*.c)))
DATA_built  = sql/$(EXTENSION)--$(EXTVERSION).sql
# Every released version's install script and every upgrade script are
# committed; the current version's is built from sql/$(EXTENSION).sql.
DATA        = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))
EXTRA_CLEAN = sql/$(EXTENSION)--$(EXTVERSION).sql results output_iso \
              regression.diffs regression.out tmp_check

REGRESS       = $(basename $(notdir $(sort $(wildcard tests/sql/*.sql))))
REGRESS_OPTS  = --inputdir=tests
ISOLATION     = $(basename $(notdir $(sort $(wildcard tests/specs/*.spec))))
ISOLATION_OPTS = --inputdir=tests

PG_CPPFLAGS = -I$(srcdir)/extension -DPROVISION_VERSION='"$(EXTVERSION)"' \
              -Wall -Wextra -Werror -Wno-unused-parameter \
              -Wno-missing-field-initializers -Wno-sign-compare

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

all:

ifneq ($(wildcard $(PGXS)),)
include $(PGXS)

# Every source file includes the shared header; PGXS does not track headers.
$(OBJS) $(OBJS:.o=.bc): extension/provision.h
else
# A fresh machine has no PostgreSQL yet: `make run` and `make test` install
# it (scripts/deps); the targets that need PGXS say how to get it.
all install installcheck clean:
	@echo "PostgreSQL 15 server development files not found ($(PG_CONFIG) --pgxs)." >&2
	@echo "Run 'scripts/deps run' (as root) or 'make run', or set PG_CONFIG." >&2
	@echo "On a host that runs only the listener: make -C listener && make -C listener install" >&2
	@exit 1
endif

PREFIX ?= /usr/local
export PG_CONFIG

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql
	cp $< $@

# Without PGXS, `make` and `make install` stop with the lines above before
# building anything else.
ifneq ($(wildcard $(PGXS)),)
all: listener dispatcher
install: listener-install dispatcher-install
endif
.PHONY: listener listener-install dispatcher dispatcher-install test run lint fuzz test-faults \
        test-cassert test-cassert-valgrind

listener:
	$(MAKE) -C listener VERSION=$(EXTVERSION)

dispatcher:
	$(MAKE) -C dispatcher VERSION=$(EXTVERSION)

listener-install: listener
	$(MAKE) -C listener install PREFIX=$(PREFIX)

dispatcher-install: dispatcher
	$(MAKE) -C dispatcher install PREFIX=$(PREFIX)

clean: listener-clean dispatcher-clean
listener-clean:
	$(MAKE) -C listener clean

dispatcher-clean:
	$(MAKE) -C dispatcher clean

test:
	tests/run

# The pg_regress and isolation suites on PostgreSQL 15 built from Debian's
# source package with --enable-cassert (tests/cassert; the build is cached
# outside the checkout), and the same with that server under valgrind.
test-cassert:
	TEST_SUITES=cassert tests/run
test-cassert-valgrind:
	TEST_SUITES=cassert-valgrind tests/run

# Every fault-injection test (tests/faults), the slow ones too.
test-faults:
	TEST_SUITES=faults-all DEPS=faults tests/run

# libFuzzer targets of the listener's pure parts; FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 10
fuzz:
	$(MAKE) -C tests/fuzz run FUZZ_SECONDS=$(FUZZ_SECONDS)

run:
	scripts/run

lint:
	scripts/lint
