//! CNI `portmap` plugin: forwards host ports to a container (the CNI form of Docker's published
//! ports), with hairpin and localhost access. Chained after a plugin that gives the container an
//! address (bridge).

mod config;
mod conntrack_flush;
mod plugin;

fn main() {
    std::process::exit(cni_common::skel::run(&plugin::Portmap));
}
