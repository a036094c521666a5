# Plain entry points. Every target that touches the network does so only in throwaway namespaces.
PREFIX ?= /opt/cni
BINDIR ?= $(PREFIX)/bin
TOOLDIR ?= /usr/local/bin
DESTDIR ?=
PLUGINS := loopback bridge host-local portmap isolation
TOOLS := cnitool

.PHONY: build test demo install uninstall clean

build:
	cargo build --release --workspace --bins

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

# Every plugin goes to $(BINDIR) (where runtimes look for CNI plugins), cnitool to $(TOOLDIR).
# A binary missing from target/release is an error, never skipped.
install: build
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(TOOLDIR)"
	set -e; for p in $(PLUGINS); do install -m 0755 "target/release/$$p" "$(DESTDIR)$(BINDIR)/$$p"; done
	set -e; for t in $(TOOLS); do install -m 0755 "target/release/$$t" "$(DESTDIR)$(TOOLDIR)/$$t"; done

uninstall:
	for p in $(PLUGINS); do rm -f "$(DESTDIR)$(BINDIR)/$$p"; done
	for t in $(TOOLS); do rm -f "$(DESTDIR)$(TOOLDIR)/$$t"; done

clean:
	cargo clean
