//! ioloop: a Tornado-style event loop on raw-syscall pollers.

pub use ioloop_sys as sys;
