//! `membership/`: [`Member`] records, whose codec core owns
//! ([`Member::from_record_value`]) so that replication, discovery and the
//! management API read them alike.

use spectrum_core::Member;

use super::{Namespace, NamespaceValue, ValueError};

impl NamespaceValue for Member {
    const NAMESPACE: Namespace = Namespace::Membership;
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        Member::from_record_value(bytes).map_err(ValueError::new)
    }
}
