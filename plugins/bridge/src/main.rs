//! CNI `bridge` plugin: a Linux bridge per network, a veth pair per container, gateway addresses on
//! the bridge, IPAM delegation and optional masquerade.

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

fn main() {
    std::process::exit(cni_common::skel::run(&plugin::Bridge));
}
