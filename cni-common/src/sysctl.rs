//! sysctl reads and writes under /proc/sys, in the calling thread's network namespace.
