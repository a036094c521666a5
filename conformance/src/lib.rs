//! conformance: sandbox namespaces, a libcni-like runner and differential harness.
