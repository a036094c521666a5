//! CNI `host-local` IPAM plugin: hands out addresses from configured ranges; state in files under
//! `<dataDir>/<network>` in the reference plugin's layout. See README.md.

fn main() {
    std::process::exit(cni_common::skel::run(&host_local::HostLocal));
}
