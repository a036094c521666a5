# Plain entry points. Every target that touches the network does so only in throwaway namespaces.
PREFIX ?= /opt/cni
BINDIR ?= $(PREFIX)/bin
TOOLDIR ?= /usr/local/bin
DESTDIR ?=
PLUGINS := loopback bridge host-local portmap isolation
TOOLS := cnitool
# Release binaries are static (scripts/build-release.sh prints where they land: target/<triple>/release).

.PHONY: build test demo install uninstall clean

build:
	bash scripts/build-release.sh >/dev/null

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

# Every plugin goes to $(BINDIR) (where runtimes look for CNI plugins), cnitool to $(TOOLDIR).
# A binary missing from the release directory is an error, never skipped.
install:
	set -e; dir="$$(bash scripts/build-release.sh -q)"; \
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(TOOLDIR)"; \
	for p in $(PLUGINS); do install -m 0755 "$$dir/$$p" "$(DESTDIR)$(BINDIR)/$$p"; done; \
	for t in $(TOOLS); do install -m 0755 "$$dir/$$t" "$(DESTDIR)$(TOOLDIR)/$$t"; done

uninstall:
	for p in $(PLUGINS); do rm -f "$(DESTDIR)$(BINDIR)/$$p"; done
	for t in $(TOOLS); do rm -f "$(DESTDIR)$(TOOLDIR)/$$t"; done

clean:
	cargo clean
