# netdiskfs: `make`, `make check`, `make check-asan`, `make faults`, `make demo`,
# `make bench`, `make install`. Every library comes through pkg-config; every package comes
# from Debian through tests/lib/install-deps.sh.
PREFIX ?= /usr/local
SBINDIR ?= /sbin
BUILD ?= build
CC ?= cc
# Each backend names its pkg-config modules in a line "/* pkg-config: ... */".
BACKEND_SRCS := $(sort $(wildcard backends/*.c))
BACKEND_PKGS := $(shell sed -n 's|^/\* pkg-config: \(.*\) \*/$$|\1|p' $(BACKEND_SRCS))
# ... and a library without a .pc file in a line "/* libs: -lfoo */".
BACKEND_LIBS := $(shell sed -n 's|^/\* libs: \(.*\) \*/$$|\1|p' $(BACKEND_SRCS))
PKGS := fuse3 jansson libcurl zlib libzstd libxxhash $(BACKEND_PKGS)
CORE_SRCS := $(filter-out src/main.c,$(sort $(wildcard src/*.c src/util/*.c src/layers/*.c)))
WARN := -Wall -Wextra -Wshadow -Wvla -Wformat=2 -Wmissing-prototypes -Wno-unused-parameter -Werror
CFLAGS ?= -O2 -g
# pkg-config runs when a recipe first needs it, never while the Makefile
# is read: on a fresh machine the libraries arrive with the deps step, which
# every compile and link waits for (order-only prerequisite).
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(shell $(PKG_CONFIG) --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS = $(eval PKG_LIBS := $$(shell $(PKG_CONFIG) --libs $(PKGS)))$(PKG_LIBS)
PKG_CONFIG ?= pkg-config
ND_CFLAGS = -std=gnu11 $(WARN) -D_GNU_SOURCE -pthread -Isrc -Ibackends \
	$(PKG_CFLAGS) $(SANFLAGS)
ND_LIBS = $(PKG_LIBS) $(BACKEND_LIBS) -pthread -lm $(SANFLAGS)

CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/%.o) $(BACKEND_SRCS:%.c=$(BUILD)/%.o)
UNIT_SRCS := $(sort $(wildcard tests/unit/*.c))
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)
FUNC_TESTS := $(sort $(wildcard tests/func/*.sh))

.PHONY: all deps check check-asan faults unit func fuzz demo bench install uninstall clean
all: netdiskfs

deps:
	@tests/lib/install-deps.sh

$(BUILD)/netdiskfs: $(CORE_OBJS) $(BUILD)/src/main.o | deps
	@echo "  LD      $@"
	@$(CC) -o $@ $^ $(ND_LIBS)

# Replaced by rename, so a running daemon does not make it "text file busy".
netdiskfs: $(BUILD)/netdiskfs
	@cp $< $@.tmp && mv -f $@.tmp $@

$(BUILD)/%.o: %.c $(wildcard src/*.h src/util/*.h src/layers/*.h backends/*.h) | deps
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(ND_CFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/unit/%: tests/unit/%.c $(CORE_OBJS) | deps
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ND_CFLAGS) $(CFLAGS) -o $@ $^ $(ND_LIBS)

# The fuzz target needs clang's libFuzzer; it runs for FUZZ_SECONDS.
FUZZ_SECONDS ?= 20
# The parser and every backend's URL file: no protocol library is linked.
URL_SRCS := src/url.c src/opts.c src/log.c src/secret.c src/table.c $(wildcard backends/*-url.c)
$(BUILD)/fuzz-parse: tests/fuzz/fuzz-parse.c $(URL_SRCS) | deps
	@mkdir -p $(dir $@)
	clang -std=gnu11 -g -O1 -Wall -Werror -D_GNU_SOURCE -Isrc -Ibackends -fsanitize=fuzzer,address,undefined \
		$(shell $(PKG_CONFIG) --cflags jansson libcurl) -o $@ $^ $(shell $(PKG_CONFIG) --libs jansson libcurl) -pthread

# The qcow2 layer on its own, over an in-memory container.
QCOW2_SRCS := $(wildcard src/layers/qcow2*.c) src/layers/layer.c src/log.c src/secret.c
$(BUILD)/fuzz-qcow2: tests/fuzz/fuzz-qcow2.c $(QCOW2_SRCS) | deps
	@mkdir -p $(dir $@)
	clang -std=gnu11 -g -O1 -Wall -Werror -D_GNU_SOURCE -Isrc -fsanitize=fuzzer,address,undefined \
		$(shell $(PKG_CONFIG) --cflags zlib libzstd) -o $@ $^ $(shell $(PKG_CONFIG) --libs zlib libzstd) -pthread

fuzz: $(BUILD)/fuzz-parse
	mkdir -p $(BUILD)/fuzz-corpus
	cp tests/fuzz/corpus/* $(BUILD)/fuzz-corpus/
	$(BUILD)/fuzz-parse -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=0 \
		$(BUILD)/fuzz-corpus 2>$(BUILD)/fuzz.log || { tail -n 60 $(BUILD)/fuzz.log; exit 1; }

unit: deps netdiskfs $(UNIT_BINS)
func: deps netdiskfs

# ./netdiskfs is the plain build's: a sanitized check leaves its binary in
# its own BUILD (else `make demo` or `make bench` afterwards ran it).
check: deps
	$(MAKE) $(BUILD)/netdiskfs $(if $(SANFLAGS),,netdiskfs) $(UNIT_BINS) $(BUILD)/fuzz-parse $(BUILD)/fuzz-qcow2
	@ND=$(CURDIR)/$(BUILD)/netdiskfs FUZZ_BIN=$(CURDIR)/$(BUILD)/fuzz-parse \
		FUZZ_QCOW2_BIN=$(CURDIR)/$(BUILD)/fuzz-qcow2 \
		tests/run-tests.sh $(UNIT_BINS) tests/fuzz/run-fuzz.sh tests/fuzz/run-fuzz-qcow2.sh $(FUNC_TESTS)

check-asan: deps
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
	$(MAKE) check BUILD=build-asan SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" CFLAGS="-O1 -g"

# The whole fault matrix: every backend with a server here x every fault
# (about 5 minutes); make check runs a subset (tests/func/faults-short.sh).
faults: deps
	$(MAKE) netdiskfs
	ND=$(CURDIR)/$(BUILD)/netdiskfs tests/faults/faults.sh

demo: deps netdiskfs
	demo/demo.sh

bench: deps netdiskfs
	tests/bench/bench.sh $(if $(QUICK),--quick)

# install: the daemon in $(PREFIX)/bin, the mount(8) helpers in $(SBINDIR),
# the systemd unit, every man page and the examples. DESTDIR stages.
install: MANDIR ?= $(PREFIX)/share/man
install: UNITDIR ?= $(PREFIX)/lib/systemd/system
install: DOCDIR ?= $(PREFIX)/share/doc/netdiskfs
install: netdiskfs
	install -D -m 755 netdiskfs $(DESTDIR)$(PREFIX)/bin/netdiskfs
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(DOCDIR)
	sed 's|@BINDIR@|$(PREFIX)/bin|g' mount/mount.netdiskfs >$(DESTDIR)$(SBINDIR)/mount.netdiskfs
	chmod 755 $(DESTDIR)$(SBINDIR)/mount.netdiskfs
	ln -sf mount.netdiskfs $(DESTDIR)$(SBINDIR)/mount.fuse.netdiskfs
	sed 's|/usr/local/bin/netdiskfs|$(PREFIX)/bin/netdiskfs|g' 'mount/netdiskfs@.service' \
		>'$(DESTDIR)$(UNITDIR)/netdiskfs@.service'
	chmod 644 '$(DESTDIR)$(UNITDIR)/netdiskfs@.service'
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(wildcard man/*.5) $(DESTDIR)$(MANDIR)/man5/
	install -m 644 mount/netdisk.tab.example mount/fstab.example $(DESTDIR)$(DOCDIR)/

uninstall: MANDIR ?= $(PREFIX)/share/man
uninstall: UNITDIR ?= $(PREFIX)/lib/systemd/system
uninstall: DOCDIR ?= $(PREFIX)/share/doc/netdiskfs
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/netdiskfs $(DESTDIR)$(SBINDIR)/mount.netdiskfs \
		$(DESTDIR)$(SBINDIR)/mount.fuse.netdiskfs '$(DESTDIR)$(UNITDIR)/netdiskfs@.service' \
		$(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(wildcard man/*.1))) \
		$(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(wildcard man/*.5))) \
		$(DESTDIR)$(DOCDIR)/netdisk.tab.example $(DESTDIR)$(DOCDIR)/fstab.example
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

clean:
	rm -rf build build-asan netdiskfs
