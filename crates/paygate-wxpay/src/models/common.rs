//! Small pieces the model files share: reading `null` as a default, the CNY currency, and
//! JSON-pointer building for error details.

use serde::{Deserialize, Deserializer};

/// The only currency of domestic merchants.
pub const CNY: &str = "CNY";

/// Serde default for a `currency` that a peer left out.
pub fn cny() -> String {
    CNY.to_owned()
}

/// For `#[serde(default, deserialize_with = "null_as_default")]` on non-`Option` fields such as
/// lists: V3 peers may send `null` for an absent value, which plain serde would reject.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `ptr("/detail/goods_detail", 3)` → `/detail/goods_detail/3`; also for keys.
pub fn ptr(parent: &str, child: impl std::fmt::Display) -> String {
    format!("{parent}/{child}")
}

/// Whether a serialized list can be left out (keeps bodies as terse as WeChat's own).
pub fn is_empty<T>(v: &[T]) -> bool {
    v.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct WithList {
        #[serde(default, deserialize_with = "null_as_default")]
        items: Vec<i64>,
    }

    #[test]
    fn null_and_absent_lists_read_as_empty() {
        let a: WithList = serde_json::from_str(r#"{"items":null}"#).unwrap();
        let b: WithList = serde_json::from_str("{}").unwrap();
        let c: WithList = serde_json::from_str(r#"{"items":[1,2]}"#).unwrap();
        assert!(a.items.is_empty() && b.items.is_empty());
        assert_eq!(c.items, vec![1, 2]);
        assert_eq!(ptr("/receivers", 2), "/receivers/2");
        assert_eq!(cny(), "CNY");
        assert!(is_empty::<i64>(&[]));
    }
}
