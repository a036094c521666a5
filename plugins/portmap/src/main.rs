//! CNI `portmap` plugin: forwards host ports to a container (the CNI form of Docker's published
//! ports), with hairpin and localhost access. Chained after a plugin that gives the container an
//! address (bridge).

mod config;
mod conntrack_flush;
mod plugin;

/// A plugin process lives for milliseconds: allocate by bumping through one region (see
/// `cni_common::arena`).
#[global_allocator]
static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();

fn main() {
    std::process::exit(cni_common::skel::run(&plugin::Portmap));
}
