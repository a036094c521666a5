//! CNI `host-local` IPAM plugin: hands out addresses from configured ranges; state in files under
//! `<dataDir>/<network>` in the reference plugin's layout. See README.md.

/// A plugin process lives for milliseconds: allocate by bumping through one region (see
/// `cni_common::arena`).
#[global_allocator]
static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();

// Says which build this is, so that bridge can run the same code in-process (lib.rs, `BUILTIN`).
cni_common::identity_note!(host_local::IDENTITY);

fn main() {
    std::process::exit(cni_common::skel::run(&host_local::HostLocal));
}
