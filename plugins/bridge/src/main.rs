//! CNI `bridge` plugin: a Linux bridge per network, a veth pair per container, gateway addresses on
//! the bridge, IPAM delegation and optional masquerade.
// Entered through `cni_common::plugin_main!`, without Rust's own start-up (see
// `cni_common::skel::process_main`).
#![cfg_attr(not(test), no_main)]

mod check;
mod config;
mod container;
mod host;
mod plan;
mod plugin;

/// A plugin process lives for milliseconds: allocate by bumping through one region (see
/// `cni_common::arena`).
#[global_allocator]
static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();

/// Delegated plugins whose code bridge links: run in-process when `CNI_PATH` holds the same build.
static BUILTINS: [cni_common::invoke::Builtin; 1] = [host_local::BUILTIN];

cni_common::plugin_main!(plugin::Bridge, {
    cni_common::invoke::set_builtins(&BUILTINS);
});
