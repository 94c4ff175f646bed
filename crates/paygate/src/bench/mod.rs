//! `paygate bench`: load against a running V3 server, and the cost of the cryptography that
//! bounds it. See `load` and `crypto`.

pub mod crypto;
pub mod load;
pub mod procstat;
