//! CNI `loopback` plugin: sets `lo` up (ADD) or down (DEL) inside the container's network namespace.
//! It ignores `CNI_IFNAME`; chained, it passes `prevResult` through.
// Entered through `cni_common::plugin_main!`, without Rust's own start-up (see
// `cni_common::skel::process_main`).
#![cfg_attr(not(test), no_main)]

mod plugin;

/// A plugin process lives for milliseconds: allocate by bumping through one region (see
/// `cni_common::arena`).
#[global_allocator]
static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();

cni_common::plugin_main!(plugin::Loopback);
