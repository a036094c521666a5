# Plain entry points. Every target that touches the network does so only in throwaway namespaces.
PREFIX ?= /opt/cni
BINDIR ?= $(PREFIX)/bin
TOOLDIR ?= /usr/local/bin
DESTDIR ?=
PLUGINS := loopback bridge host-local portmap isolation
TOOLS := cnitool
# Release binaries are static (scripts/build-release.sh) and land in target/<host triple>/release.
RELEASE_DIR = $(shell rustc -vV | sed -n 's/^host: //p' | sed 's|^|target/|; s|$$|/release|')

.PHONY: build test demo install uninstall clean

build:
	bash scripts/build-release.sh >/dev/null

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

# Every plugin goes to $(BINDIR) (where runtimes look for CNI plugins), cnitool to $(TOOLDIR).
# A binary missing from $(RELEASE_DIR) is an error, never skipped.
install: build
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(TOOLDIR)"
	set -e; for p in $(PLUGINS); do install -m 0755 "$(RELEASE_DIR)/$$p" "$(DESTDIR)$(BINDIR)/$$p"; done
	set -e; for t in $(TOOLS); do install -m 0755 "$(RELEASE_DIR)/$$t" "$(DESTDIR)$(TOOLDIR)/$$t"; done

uninstall:
	for p in $(PLUGINS); do rm -f "$(DESTDIR)$(BINDIR)/$$p"; done
	for t in $(TOOLS); do rm -f "$(DESTDIR)$(TOOLDIR)/$$t"; done

clean:
	cargo clean
