//! `resources/`: [`ResourceDefinition`]s, each stored under its own name.

use spectrum_resources::ResourceDefinition;

use super::{Namespace, NamespaceValue, ValueError};

impl NamespaceValue for ResourceDefinition {
    const NAMESPACE: Namespace = Namespace::Resources;
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        ResourceDefinition::from_json_bytes(bytes).map_err(ValueError::new)
    }

    fn check_name(&self, name: &str) -> Result<(), ValueError> {
        if self.name.as_str() == name {
            return Ok(());
        }
        Err(ValueError::new(format!(
            "the definition is named {:?} but stored under {name:?}",
            self.name.as_str()
        )))
    }
}
