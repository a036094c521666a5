//! CNI `portmap` plugin: forwards host ports to a container (the CNI form of Docker's published
//! ports), with hairpin and localhost access. Chained after a plugin that gives the container an
//! address (bridge).
// Entered through `cni_common::plugin_main!`, without Rust's own start-up (see
// `cni_common::skel::process_main`).
#![cfg_attr(not(test), no_main)]

mod config;
mod conntrack_flush;
mod plugin;

/// A plugin process lives for milliseconds: allocate by bumping through one region (see
/// `cni_common::arena`).
#[global_allocator]
static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();

cni_common::plugin_main!(plugin::Portmap);
