//! The operator audit trail's check for `paygate audit verify` (issue 7 §6): the chain of
//! admin actions recomputed with the key derived from the master key, failing on the first
//! entry that was edited, deleted or forged.

use crate::audit::{Context, Failed, Passed};

pub async fn operator_trail(ctx: &Context) -> Result<Passed, Failed> {
    let fail = |reason: String| Failed {
        check: "operator-trail",
        reason,
    };
    let verdict = paygate_server::audit_trail::verify(ctx.store.as_ref())
        .await
        .map_err(|e| fail(format!("cannot read the trail: {e}")))?;
    match verdict.broken {
        None => Ok(Passed {
            check: "operator-trail",
            summary: format!("{} admin actions, chain intact", verdict.entries),
        }),
        Some(b) => Err(fail(format!(
            "entry {} of operator_audit: {} ({} entries before it verified)",
            b.seq, b.reason, verdict.entries
        ))),
    }
}
