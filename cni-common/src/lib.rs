//! cni-common: the library every plugin of the suite shares.
//!
//! - [`error`]: the typed error and the spec's error codes
//! - [`version`]: spec versions
//! - [`config`]: network configuration (conflist and plugin config) types
//! - [`result`]: results of every spec version and conversions between them
//! - [`args`]: `CNI_ARGS` parsing
//! - [`skel`]: the entry point every plugin calls (env, stdin, version negotiation, dispatch)
//! - [`invoke`]: delegation to other plugins (IPAM) through `CNI_PATH`; [`elfnote`]: build identity notes
//! - [`netns`]: entering network namespaces
//! - [`netlink`]: links, addresses, routes over rtnetlink; [`sysctl`]

pub mod arena;
pub mod smallcopy;
pub mod error;
pub mod netns;
pub mod version;

pub use error::{CniError, Result};
pub mod netlink;
pub mod sysctl;
pub mod config;
pub mod result;
pub mod args;
pub mod skel;
pub mod invoke;
pub mod elfnote;
pub mod gc;
pub mod conntrack;
pub mod oplog;
