//! paygate-wxpay
pub mod bill;
pub mod certificates;
pub mod crypto;
pub mod notify;
pub mod paysign;
pub mod sign;
pub mod models;
pub mod rules;
