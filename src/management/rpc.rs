//! [`Rpc`]: every call of the management service, the role each one needs, and
//! which ones are audited. One table, so a reviewer reads the whole policy in one
//! place and a new RPC cannot be added without a role.

use tonic::{Request, Status};

use crate::auth::{Caller, Role};

/// One RPC of `spectrum.management.v1.Management`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is the RPC of the same name
pub enum Rpc {
    Get,
    Put,
    Txn,
    Delete,
    List,
    Status,
    ListConflicts,
    SetLicense,
    ShowLicense,
    CreateDataflow,
    ListDataflows,
    ShowDataflow,
    DeleteDataflow,
    CreateResource,
    ListResources,
    ShowResource,
    DeleteResource,
    CheckResources,
    ExportResources,
    ImportResources,
    ExportConfig,
    ImportConfig,
    SetNodeState,
    /// `SetNodeState` to `REMOVED`: removing a member for good needs more than a
    /// drain.
    RemoveNode,
    AddUser,
    ListUsers,
    RevokeUser,
    RotateUser,
    ListAudit,
    ResealSecrets,
    SetBalancerStrategy,
    ClearBalancerStrategy,
    SetBalancerWeight,
    ClearBalancerWeight,
    ShowBalancerSettings,
    Watch,
}

impl Rpc {
    /// Every RPC.
    pub const ALL: [Rpc; 36] = [
        Rpc::Get,
        Rpc::Put,
        Rpc::Txn,
        Rpc::Delete,
        Rpc::List,
        Rpc::Status,
        Rpc::ListConflicts,
        Rpc::SetLicense,
        Rpc::ShowLicense,
        Rpc::CreateDataflow,
        Rpc::ListDataflows,
        Rpc::ShowDataflow,
        Rpc::DeleteDataflow,
        Rpc::CreateResource,
        Rpc::ListResources,
        Rpc::ShowResource,
        Rpc::DeleteResource,
        Rpc::CheckResources,
        Rpc::ExportResources,
        Rpc::ImportResources,
        Rpc::ExportConfig,
        Rpc::ImportConfig,
        Rpc::SetNodeState,
        Rpc::RemoveNode,
        Rpc::AddUser,
        Rpc::ListUsers,
        Rpc::RevokeUser,
        Rpc::RotateUser,
        Rpc::ListAudit,
        Rpc::ResealSecrets,
        Rpc::SetBalancerStrategy,
        Rpc::ClearBalancerStrategy,
        Rpc::SetBalancerWeight,
        Rpc::ClearBalancerWeight,
        Rpc::ShowBalancerSettings,
        Rpc::Watch,
    ];

    /// The lowest role that may call it: the whole authorisation policy.
    ///
    /// `ListAudit` is `operator`: operators investigate what changed and who
    /// changed it; viewers (dashboards, monitoring) need not see who does what.
    pub fn required_role(self) -> Role {
        use Rpc::*;
        match self {
            Get | List | Status | ListConflicts | ShowLicense | ListDataflows | ShowDataflow
            | ListResources | ShowResource | ExportResources | ExportConfig | ShowBalancerSettings
            | Watch => Role::Viewer,
            SetNodeState | CheckResources | ListAudit => Role::Operator,
            Put
            | Txn
            | Delete
            | SetLicense
            | CreateDataflow
            | DeleteDataflow
            | CreateResource
            | DeleteResource
            | ImportResources
            | ImportConfig
            | RemoveNode
            | AddUser
            | ListUsers
            | RevokeUser
            | RotateUser
            | ResealSecrets
            | SetBalancerStrategy
            | ClearBalancerStrategy
            | SetBalancerWeight
            | ClearBalancerWeight => Role::Admin,
        }
    }

    /// Whether it changes the configuration database, and so is recorded in the
    /// audit log (refused and failed calls included).
    pub fn is_write(self) -> bool {
        use Rpc::*;
        matches!(
            self,
            Put | Txn
                | Delete
                | SetLicense
                | CreateDataflow
                | DeleteDataflow
                | CreateResource
                | DeleteResource
                | ImportResources
                | ImportConfig
                | SetNodeState
                | RemoveNode
                | AddUser
                | RevokeUser
                | RotateUser
                | ResealSecrets
                | SetBalancerStrategy
                | ClearBalancerStrategy
                | SetBalancerWeight
                | ClearBalancerWeight
        )
    }

    /// Its name in the `.proto` file.
    pub fn name(self) -> &'static str {
        use Rpc::*;
        match self {
            Get => "Get",
            Put => "Put",
            Txn => "Txn",
            Delete => "Delete",
            List => "List",
            Status => "Status",
            ListConflicts => "ListConflicts",
            SetLicense => "SetLicense",
            ShowLicense => "ShowLicense",
            CreateDataflow => "CreateDataflow",
            ListDataflows => "ListDataflows",
            ShowDataflow => "ShowDataflow",
            DeleteDataflow => "DeleteDataflow",
            CreateResource => "CreateResource",
            ListResources => "ListResources",
            ShowResource => "ShowResource",
            DeleteResource => "DeleteResource",
            CheckResources => "CheckResources",
            ExportResources => "ExportResources",
            ImportResources => "ImportResources",
            ExportConfig => "ExportConfig",
            ImportConfig => "ImportConfig",
            SetNodeState => "SetNodeState",
            RemoveNode => "SetNodeState(REMOVED)",
            AddUser => "AddUser",
            ListUsers => "ListUsers",
            RevokeUser => "RevokeUser",
            RotateUser => "RotateUser",
            ListAudit => "ListAudit",
            ResealSecrets => "ResealSecrets",
            SetBalancerStrategy => "SetBalancerStrategy",
            ClearBalancerStrategy => "ClearBalancerStrategy",
            SetBalancerWeight => "SetBalancerWeight",
            ClearBalancerWeight => "ClearBalancerWeight",
            ShowBalancerSettings => "ShowBalancerSettings",
            Watch => "Watch",
        }
    }

    /// Whether `caller` may call it: the caller, or `PERMISSION_DENIED` naming the
    /// role needed.
    ///
    /// # Errors
    ///
    /// `PERMISSION_DENIED` for a role too low.
    pub fn check(self, caller: &Caller) -> Result<(), Status> {
        let needed = self.required_role();
        if caller.role.allows(needed) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "{} needs the {needed} role; user {:?} is {} {}",
            self.name(),
            caller.name,
            if caller.role.to_string().starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" },
            caller.role
        )))
    }
}

/// The caller [`BearerAuth`](crate::auth::BearerAuth) identified. A request that
/// did not pass through it is refused: the service never runs unauthenticated by
/// accident.
pub(super) fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request.extensions().get::<Caller>().cloned().ok_or_else(|| {
        Status::unauthenticated(
            "no caller identified: the management service must be served behind BearerAuth",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_needs_admin_except_drain_and_undrain_which_need_operator() {
        assert_eq!(Rpc::RemoveNode.required_role(), Role::Admin, "removing a member is not a drain");
        for rpc in Rpc::ALL {
            let role = rpc.required_role();
            match rpc {
                Rpc::SetNodeState => assert_eq!(role, Role::Operator),
                _ if rpc.is_write() => assert_eq!(role, Role::Admin, "{rpc:?}"),
                Rpc::CheckResources | Rpc::ListAudit => assert_eq!(role, Role::Operator),
                Rpc::ListUsers => assert_eq!(role, Role::Admin),
                _ => assert_eq!(role, Role::Viewer, "{rpc:?}"),
            }
        }
    }

    #[test]
    fn a_role_too_low_is_refused_naming_the_role_needed() {
        let vera = Caller { name: "vera".into(), role: Role::Viewer };
        let err = Rpc::Put.check(&vera).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(err.message(), "Put needs the admin role; user \"vera\" is a viewer");
        assert!(Rpc::Get.check(&vera).is_ok());
        let otto = Caller { name: "otto".into(), role: Role::Operator };
        assert!(Rpc::SetNodeState.check(&otto).is_ok() && Rpc::ListAudit.check(&otto).is_ok());
        assert_eq!(
            Rpc::AddUser.check(&otto).unwrap_err().message(),
            "AddUser needs the admin role; user \"otto\" is an operator"
        );
        assert!(Rpc::ALL.iter().all(|rpc| rpc.check(&Caller::bootstrap()).is_ok()));
    }

    #[test]
    fn names_are_distinct() {
        let names: std::collections::HashSet<_> = Rpc::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Rpc::ALL.len());
    }
}
