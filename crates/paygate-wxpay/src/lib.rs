//! paygate-wxpay
