//! CNI `bridge` plugin: a Linux bridge per network, a veth pair per container, gateway addresses on
//! the bridge, IPAM delegation and optional masquerade.

mod check;
mod config;
mod container;
mod host;
mod plan;
mod plugin;

fn main() {
    std::process::exit(cni_common::skel::run(&plugin::Bridge));
}
