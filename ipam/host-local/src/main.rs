//! CNI `host-local` IPAM plugin: hands out addresses from configured ranges; state in files under
//! `<dataDir>/<network>` in the reference plugin's layout. See README.md.
// Entered through `cni_common::plugin_main!`, without Rust's own start-up (see
// `cni_common::skel::process_main`).
#![cfg_attr(not(test), no_main)]

/// A plugin process lives for milliseconds: allocate by bumping through one region (see
/// `cni_common::arena`).
#[global_allocator]
static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();

// Says which build this is, so that bridge can run the same code in-process (lib.rs, `BUILTIN`).
cni_common::identity_note!(host_local::IDENTITY);

cni_common::plugin_main!(host_local::HostLocal);
