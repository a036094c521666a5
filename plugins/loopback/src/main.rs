//! CNI `loopback` plugin: sets `lo` up (ADD) or down (DEL) inside the container's network namespace.
//! It ignores `CNI_IFNAME`; chained, it passes `prevResult` through.

mod plugin;

fn main() {
    std::process::exit(cni_common::skel::run(&plugin::Loopback));
}
