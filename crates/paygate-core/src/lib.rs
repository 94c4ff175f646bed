//! paygate-core
