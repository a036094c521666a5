//! CNI `isolation` plugin: drops traffic between bridge networks that use isolation (Docker's
//! DOCKER-ISOLATION chains), and with `icc: false` between containers of one bridge (Docker's
//! `enable_icc=false`, done with bridge port isolation so it needs no br_netfilter). Chained after
//! `bridge` (and `portmap`); passes prevResult through.
// Entered through `cni_common::plugin_main!`, without Rust's own start-up (see
// `cni_common::skel::process_main`).
#![cfg_attr(not(test), no_main)]

mod config;
mod plugin;
mod ports;

/// A plugin process lives for milliseconds: allocate by bumping through one region (see
/// `cni_common::arena`).
#[global_allocator]
static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();

cni_common::plugin_main!(plugin::Isolation);
