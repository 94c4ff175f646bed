//! paygate-wxpay
pub mod bill;
pub mod certificates;
pub mod client;
pub mod crypto;
pub mod kit;
pub mod models;
pub mod notify;
pub mod paysign;
pub mod rules;
pub mod server;
pub mod sign;
