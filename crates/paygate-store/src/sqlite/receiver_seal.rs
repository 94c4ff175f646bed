//! Share orders read from SQLite with their personal receivers' openids back in place
//! (crate::receiver_seal).

use super::SqliteStore;
use crate::StoreError;
use crate::receiver_seal::{open_share, share_tokens};
use crate::sharing::ShareOrderRecord;

impl SqliteStore {
    pub(super) async fn open_shares(
        &self,
        list: Vec<ShareOrderRecord>,
    ) -> Result<Vec<ShareOrderRecord>, StoreError> {
        let openids = self
            .sealer
            .open_tokens(share_tokens(&list), |t| self.openids(t))
            .await?;
        list.into_iter()
            .map(|o| open_share(&self.sealer, &openids, o))
            .collect()
    }
}
