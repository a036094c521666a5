//! CNI `isolation` plugin: drops traffic between bridge networks that use isolation (Docker's
//! DOCKER-ISOLATION chains), and with `icc: false` between containers of one bridge (Docker's
//! `enable_icc=false`, done with bridge port isolation so it needs no br_netfilter). Chained after
//! `bridge` (and `portmap`); passes prevResult through.

mod config;
mod plugin;
mod ports;

/// A plugin process lives for milliseconds: allocate by bumping through one region (see
/// `cni_common::arena`).
#[global_allocator]
static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();

fn main() {
    std::process::exit(cni_common::skel::run(&plugin::Isolation));
}
