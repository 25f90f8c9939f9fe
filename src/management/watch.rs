//! The `Watch` RPC: a server stream of the changes under a prefix, run by
//! [`Admin::watch`](crate::admin::Admin::watch).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{ManagementService, Rpc, after, entry_served_by, proto};
use crate::watch::{WatchPosition, event_to_wire};

/// The stream `Watch` answers with.
pub type WatchEvents = Pin<Box<dyn Stream<Item = Result<proto::WatchEvent, Status>> + Send>>;

impl ManagementService {
    pub(super) async fn watch_stream(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<WatchEvents>, Status> {
        let caller = self.authorize(&request, Rpc::Watch, "").await?;
        let credential = request.extensions().get::<crate::auth::Credential>().cloned();
        let req = request.into_inner();
        super::rpc::check_read(&caller, Rpc::Watch, &req.prefix)?;
        let from = match req.from.as_str() {
            "" => None,
            text => Some(
                text.parse::<WatchPosition>().map_err(|e| Status::invalid_argument(format!("from: {e}")))?,
            ),
        };
        let events = self.admin.watch(&req.prefix, from, &after("", req.read.as_ref())?).await?;
        let served_by = entry_served_by(&self.admin);
        // Checked at every event, those the caller may not see included (a
        // revocation is one, under users/).
        let events =
            crate::auth::until_invalid(events.map(|event| event.map_err(Status::from)), credential, Err);
        let wire =
            events.filter(move |event| super::rpc::may_see(&caller, event)).map(move |event| match event {
                Ok(event) => Ok(event_to_wire(event, &served_by)),
                Err(status) => Err(status),
            });
        Ok(Response::new(Box::pin(wire)))
    }
}
