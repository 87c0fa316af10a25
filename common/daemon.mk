# common/daemon.mk - the build both daemons share: listener/Makefile and
# dispatcher/Makefile set what differs and include this file.
#
# Set before the include:
#   TOP            the daemon's directory
#   DAEMON         the binary's name (provision-listener)
#   VERSION_MACRO  the -D name carrying VERSION into the code
#   PKG_MODULES    pkg-config modules besides libpq
#   EXTRA_LIBS     further libraries (-lm), may be empty
#   SRCS           the daemon's own sources
#   COMMON_SRCS    sources of common/ it links
#   LISTENER_SRCS  sources of listener/ it links (the dispatcher's log.c)
#   UNIT_TESTS     its tests in tests/unit; each test T lists the objects it
#                  links, relative to the build directory, in T_OBJS
#   INCLUDES       -I flags after the daemon's own directory and common/
#
# Targets: all, install, test-unit, test-unit-valgrind, clean.
# Variables (override on the command line):
#   PREFIX     install prefix                         [/usr/local]
#   DESTDIR    staging root prepended to PREFIX       []
#   VERSION    what --version prints        [EXTVERSION of ../Makefile]
#   CC         C compiler                             [cc]
#   SANITIZE   1 = -fsanitize=address,undefined build into build/asan/
#   PG_CONFIG  used for libpq when pkg-config has no libpq.pc [pg_config]
#   PKG_CONFIG                                        [pkg-config]
#   PROVE      TAP harness                            [prove]
#   VALGRIND   valgrind command for test-unit-valgrind

COMMON   := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
LISTENER := $(abspath $(COMMON)/../listener)
UNIT_DIR := $(abspath $(COMMON)/../tests/unit)

PREFIX     ?= /usr/local
DESTDIR    ?=
VERSION    ?= $(shell sed -n 's/^EXTVERSION *= *//p' $(COMMON)/../Makefile)
CC         ?= cc
SANITIZE   ?=
PG_CONFIG  ?= pg_config
PKG_CONFIG ?= pkg-config
PROVE      ?= prove
VALGRIND   ?= valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99

LIBPQ_CFLAGS := $(shell $(PKG_CONFIG) --cflags libpq 2>/dev/null || echo -I$$($(PG_CONFIG) --includedir))
LIBPQ_LIBS   := $(shell $(PKG_CONFIG) --libs libpq 2>/dev/null || echo -L$$($(PG_CONFIG) --libdir) -lpq)
DEP_CFLAGS   := $(shell $(PKG_CONFIG) --cflags $(PKG_MODULES)) $(LIBPQ_CFLAGS)
DEP_LIBS     := $(shell $(PKG_CONFIG) --libs $(PKG_MODULES)) $(LIBPQ_LIBS) -lpthread $(EXTRA_LIBS)

WARN   := -Wall -Wextra -Werror
CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -I$(TOP) -I$(COMMON) $(INCLUDES) $(DEP_CFLAGS) \
             -D$(VERSION_MACRO)='"$(VERSION)"'

ifeq ($(SANITIZE),1)
BUILD  := $(TOP)/build/asan
SAN    := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
ALL_CFLAGS += $(SAN)
LDFLAGS += $(SAN)
BIN    := $(BUILD)/$(DAEMON)
else
BUILD  := $(TOP)/build/release
BIN    := $(TOP)/$(DAEMON)
endif

OBJS := $(patsubst %.c,$(BUILD)/%.o,$(SRCS)) \
        $(patsubst %.c,$(BUILD)/common/%.o,$(COMMON_SRCS)) \
        $(patsubst %.c,$(BUILD)/listener/%.o,$(LISTENER_SRCS))
HDRS := $(wildcard $(TOP)/*.h) $(wildcard $(COMMON)/*.h) $(patsubst %.c,$(LISTENER)/%.h,$(LISTENER_SRCS))
UNIT_BINS := $(patsubst %,$(BUILD)/tests/%,$(UNIT_TESTS))

.PHONY: all install clean test-unit test-unit-valgrind
.SECONDEXPANSION:

all: $(BIN)

$(BIN): $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(DEP_LIBS)

$(BUILD)/%.o: $(TOP)/%.c $(HDRS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/common/%.o: $(COMMON)/%.c $(HDRS) | $(BUILD)/common
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/listener/%.o: $(LISTENER)/%.c $(HDRS) | $(BUILD)/listener
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD) $(BUILD)/common $(BUILD)/listener $(BUILD)/tests:
	mkdir -p $@

$(BUILD)/tests/%: $(UNIT_DIR)/%.c $(UNIT_DIR)/tap.h $$(addprefix $(BUILD)/,$$($$*_OBJS)) | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -I$(UNIT_DIR) $(LDFLAGS) -o $@ $< \
		$(addprefix $(BUILD)/,$($*_OBJS)) $(DEP_LIBS)

test-unit: $(UNIT_BINS)
	cd $(UNIT_DIR) && $(PROVE) --exec '' $(UNIT_BINS)

test-unit-valgrind: $(UNIT_BINS)
	cd $(UNIT_DIR) && $(PROVE) --exec '$(VALGRIND)' $(UNIT_BINS)

install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/$(DAEMON)

clean:
	rm -rf $(TOP)/build $(TOP)/$(DAEMON)
