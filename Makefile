# mmlite — PGXS-style build of the output plugin.
#
#   make                                  build mmlite.so for the server of $(PG_CONFIG)
#   make install                          install it (and the mmlite extension files)
#   make install PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
#
# The plugin is a Swift package (plugin/); it is built once per PostgreSQL
# installation, against that installation's server headers, into its own
# scratch folder, so building for several majors side by side never mixes them.
# Only the extension's control and SQL files go through PGXS's own rules.
#
# The version is written in one place, the VERSION file. From it this Makefile
# generates mmlite.control (from mmlite.control.in) and the versioned script
# .build-ext/mmlite--$(MMLITE_VERSION).sql (from sql/mmlite.sql), both git-ignored,
# and passes it to the plugin's C code as MMLITE_VERSION. (The mmlite tool
# embeds the same file: Sources/CMMLiteVersion.)

PG_CONFIG ?= pg_config
SWIFT ?= swift

# (Not VERSION: PGXS sets that to the PostgreSQL version.)
MMLITE_VERSION := $(strip $(shell cat VERSION))
ifeq ($(MMLITE_VERSION),)
$(error the VERSION file is missing or empty)
endif

EXTENSION = mmlite
DATA_built = .build-ext/mmlite--$(MMLITE_VERSION).sql
EXTRA_CLEAN = mmlite.control .build-ext

ifeq ($(shell command -v $(PG_CONFIG) 2>/dev/null),)
$(error pg_config not found as '$(PG_CONFIG)'. Install the server headers (Debian: apt-get install postgresql-server-dev-15) or pass PG_CONFIG=/path/to/pg_config)
endif

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

PG_INCLUDEDIR_SERVER := $(shell $(PG_CONFIG) --includedir-server)
PG_MAJOR := $(shell $(PG_CONFIG) --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
PG_BUILD_KEY := pg$(PG_MAJOR)-$(shell printf '%s' '$(PG_INCLUDEDIR_SERVER)' | cksum | cut -d' ' -f1)
PLUGIN_SCRATCH := .build-plugin/$(PG_BUILD_KEY)
PLUGIN_SO := $(PLUGIN_SCRATCH)/mmlite.so

# Extra C defines, for test builds only (ChangeMessageTests builds one with
# MMLITE_WITHOUT_CHANGE_MESSAGE_DECODING, as a plugin from before change messages).
PLUGIN_DEFINES ?=

SWIFT_PLUGIN_FLAGS := -c release --package-path plugin --scratch-path $(PLUGIN_SCRATCH)/swiftpm \
	-Xcc -I$(PG_INCLUDEDIR_SERVER) -Xcc -Wno-ignored-attributes -Xcc '-DMMLITE_VERSION="$(MMLITE_VERSION)"' \
	$(foreach d,$(PLUGIN_DEFINES),-Xcc -D$(d))

all: $(PLUGIN_SO)

# PGXS installs $(EXTENSION).control from the source folder and $(DATA_built) as named.
mmlite.control: mmlite.control.in VERSION
	sed 's/@VERSION@/$(MMLITE_VERSION)/g' mmlite.control.in > $@

.build-ext/mmlite--$(MMLITE_VERSION).sql: sql/mmlite.sql VERSION
	$(MKDIR_P) .build-ext
	cp sql/mmlite.sql $@

# Always ask SwiftPM: it knows whether anything changed (a no-op takes ~1 s).
.PHONY: $(PLUGIN_SO)
$(PLUGIN_SO):
	@command -v $(SWIFT) >/dev/null || { echo "swift not found: install Swift 6 (https://swift.org/install) or pass SWIFT=/path/to/swift" >&2; exit 1; }
	$(SWIFT) build $(SWIFT_PLUGIN_FLAGS)
	cp "$$($(SWIFT) build $(SWIFT_PLUGIN_FLAGS) --show-bin-path)/libmmlite.so" $@
	strip --strip-unneeded $@
	@echo "built $@ for PostgreSQL $(PG_MAJOR) ($(PG_INCLUDEDIR_SERVER))"

install: install-plugin
.PHONY: install-plugin uninstall-plugin clean-plugin
install-plugin: $(PLUGIN_SO)
	$(MKDIR_P) '$(DESTDIR)$(pkglibdir)'
	$(INSTALL_SHLIB) $(PLUGIN_SO) '$(DESTDIR)$(pkglibdir)/mmlite.so'
	@echo "installed mmlite.so into $(DESTDIR)$(pkglibdir)"

uninstall: uninstall-plugin
uninstall-plugin:
	rm -f '$(DESTDIR)$(pkglibdir)/mmlite.so'

clean: clean-plugin
clean-plugin:
	rm -rf .build-plugin

# For scripts/package: where `make` puts mmlite.so for this PG_CONFIG.
.PHONY: print-plugin-so
print-plugin-so:
	@echo $(PLUGIN_SO)
