//! Domain types and pure rules shared by every paygate crate: money, the WeChat Pay v3
//! error catalogue, and time as WeChat Pay writes it. Nothing here does I/O.
//!
//! ```
//! use paygate_core::timefmt::{rfc3339_beijing, parse_rfc3339};
//! let t = parse_rfc3339("2018-06-08T10:34:56Z").unwrap();
//! assert_eq!(rfc3339_beijing(t), "2018-06-08T18:34:56+08:00");
//! ```

pub mod error;
pub mod ids;
pub mod money;
pub mod timefmt;
