//! CNI `loopback` plugin: sets `lo` up (ADD) or down (DEL) inside the container's network namespace.
//! It ignores `CNI_IFNAME`; chained, it passes `prevResult` through.

mod plugin;

/// A plugin process lives for milliseconds: allocate by bumping through one region (see
/// `cni_common::arena`).
#[global_allocator]
static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();

fn main() {
    std::process::exit(cni_common::skel::run(&plugin::Loopback));
}
