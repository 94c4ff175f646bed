//! Channel adapters: how paygate collects a payment upstream. One adapter today, WeChat Pay
//! API v3, as a direct merchant or as a service provider (服务商) for its merchants'
//! sub-merchant numbers.
//!
//! The adapter is split as the peers teach: [`transform`] builds the exact request bytes and
//! reads the answers (pure, unit-tested), [`WxChannel`] moves them through the signing,
//! answer-verifying `paygate_wxpay::client::WxClient`, and [`error::ERROR_TABLE`] is the one
//! table of WeChat Pay codes that decides between retrying, switching channel and stopping.
//! Unknown is not failure: a timeout, a 5xx or an unverifiable answer is
//! [`ChannelError::Unknown`], to be resolved by [`WxChannel::query`] or by re-sending the
//! identical prepay.
//!
//! ```no_run
//! # async fn demo(kit: paygate_wxpay::kit::MerchantKit) -> Result<(), Box<dyn std::error::Error>> {
//! use paygate_channel::{ChannelConfig, ChannelPrepay, SubMerchant, WxChannel};
//! use paygate_wxpay::models::payments::TradeType;
//! let config = ChannelConfig::from_kit("sandbox", &kit, "https://gw.example.com/callbacks/wxpay/sandbox", true);
//! let channel = WxChannel::new(config)?;
//! let credential = channel
//!     .prepay(&ChannelPrepay {
//!         trade_type: TradeType::Native,
//!         out_trade_no: "att_20240101_0001".into(),
//!         description: "QQ公仔".into(),
//!         attach: None,
//!         total_fen: 100,
//!         currency: "CNY".into(),
//!         time_expire: None,
//!         payer_openid: None,
//!         scene_info: None,
//!         goods_tag: None,
//!         detail: None,
//!         profit_sharing: false,
//!         sub: SubMerchant::default(),
//!     })
//!     .await?;
//! println!("{credential:?}");
//! # Ok(()) }
//! ```

pub mod bills;
pub mod callback;
pub mod channel;
pub mod config;
pub mod error;
pub mod profitsharing;
pub mod transform;

pub use callback::{CallbackError, CallbackEvent};
pub use channel::{CloseOutcome, SignedPrepay, WxChannel};
pub use config::{ChannelConfig, ChannelKind, ConfigError};
pub use error::{ChannelError, ErrorAction};
pub use paygate_wxpay::paysign::{AppPayParams, JsapiPayParams};
pub use profitsharing::{ChannelReceiver, ChannelShare, ChannelShareReturn, ShareReceiverCall};
pub use transform::{ChannelPrepay, ChannelRefund, PrepayCredential, SubMerchant};
