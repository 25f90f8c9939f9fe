//! `settings/`: free-form [`Setting`]s.

use bytes::Bytes;

use super::{Namespace, NamespaceValue, ValueError};

/// A setting: free-form bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting(pub Bytes);

impl NamespaceValue for Setting {
    const NAMESPACE: Namespace = Namespace::Settings;
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        Ok(Setting(Bytes::copy_from_slice(bytes)))
    }
}
