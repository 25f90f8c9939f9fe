//! `license/`: [`License`] documents.

use super::{Namespace, NamespaceValue, ValueError};
use crate::license::License;

impl NamespaceValue for License {
    const NAMESPACE: Namespace = Namespace::License;
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        License::from_json_bytes(bytes).map_err(ValueError::new)
    }
}
