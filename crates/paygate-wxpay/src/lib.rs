//! paygate-wxpay
pub mod crypto;
