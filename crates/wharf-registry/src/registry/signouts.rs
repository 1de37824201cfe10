//! When each user last signed out of the UI, in the store's records, so that every process
//! sharing the store refuses the sessions issued before it (see `ui::session`).

use super::{Registry, Result};
use crate::store::state::Record;
use crate::store::StoreError;

impl Registry {
    /// When `user` last signed out, in milliseconds since the epoch; None if never, or
    /// where the store keeps no records. A stamp that cannot be read is an error: a
    /// session it may have revoked must not be honoured.
    pub async fn signed_out_at(&self, user: &str) -> Result<Option<u64>> {
        let Some(state) = &self.core().store.state else {
            return Ok(None);
        };
        let Some(bytes) = state.get(Record::SignedOut(user)).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let at = text.trim().parse().map_err(|_| StoreError::Corrupt {
            what: format!("the sign-out stamp of {user:?}"),
            why: "not a number".into(),
        })?;
        Ok(Some(at))
    }

    /// Record, durably, that `user` signed out at `at_ms` (milliseconds since the epoch).
    pub async fn record_sign_out(&self, user: &str, at_ms: u64) -> Result<()> {
        if let Some(state) = &self.core().store.state {
            let stamp = at_ms.to_string().into_bytes();
            state.put(Record::SignedOut(user), stamp).await?;
        }
        Ok(())
    }
}
