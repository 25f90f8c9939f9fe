//! `dataflows/`: [`Dataflow`] definitions, JSON objects.

use super::{Namespace, NamespaceValue, ValueError};

/// A dataflow definition: a JSON object whose schema belongs to the services that
/// run dataflows (see [`crate::demo::DataflowDefinition`] for one).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataflow(pub serde_json::Map<String, serde_json::Value>);

impl NamespaceValue for Dataflow {
    const NAMESPACE: Namespace = Namespace::Dataflows;
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        match serde_json::from_slice(bytes)
            .map_err(|e| ValueError::new(format!("expected a JSON object: {e}")))?
        {
            serde_json::Value::Object(map) => Ok(Dataflow(map)),
            _ => Err(ValueError::new("expected a JSON object")),
        }
    }
}
