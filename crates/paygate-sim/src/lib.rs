//! paygate-sim
