//! [`Rpc`]: every call of the management service, the role each one needs, and
//! which ones are audited. One table, so a reviewer reads the whole policy in one
//! place and a new RPC cannot be added without a role.

use tonic::{Request, Status};

use crate::auth::{Caller, Role};
use crate::namespace::Namespace;
use crate::watch::WatchEvent;

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
    /// `CreateResource` with `replace` set: it changes a definition that
    /// exists, and the audit log says so.
    ReplaceResource,
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
    pub const ALL: [Rpc; 37] = [
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
        Rpc::ReplaceResource,
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
            | ReplaceResource
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
                | ReplaceResource
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

    /// Its name in the `.proto` file, as the audit log records it; the two
    /// calls the log tells apart from their RPC carry a qualifier:
    /// `SetNodeState(REMOVED)` and `CreateResource(replace)`.
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
            ReplaceResource => "CreateResource(replace)",
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
            "{} needs the {needed} role; user {:?} is {}",
            self.name(),
            caller.name,
            with_article(caller.role)
        )))
    }
}

/// The lowest role that may read the keys of `namespace` through the raw reads
/// (`Get`, `List`, `ListConflicts`, `Watch`), which are a viewer's calls: the
/// audit log's records need what [`Rpc::ListAudit`] needs (operator), users'
/// records what [`Rpc::ListUsers`] needs (admin), so that no raw read shows
/// what the dedicated call keeps from the caller. Every other namespace is a
/// viewer's to read.
pub fn read_role(namespace: Namespace) -> Role {
    match namespace {
        Namespace::Audit => Rpc::ListAudit.required_role(),
        Namespace::Users => Rpc::ListUsers.required_role(),
        _ => Role::Viewer,
    }
}

/// The namespace whose keys all start with `key_or_prefix` (a key, or a prefix
/// that reaches into one namespace), if any.
fn namespace_of(key_or_prefix: &str) -> Option<Namespace> {
    Namespace::ALL.into_iter().find(|ns| key_or_prefix.starts_with(ns.prefix()))
}

/// Whether `caller` may read `key` through a raw read (see [`read_role`]): what
/// `List`, `ListConflicts` and `Watch` answer is filtered with it. A key in no
/// namespace is readable (nothing is stored there).
pub(crate) fn may_read(caller: &Caller, key: &str) -> bool {
    namespace_of(key).is_none_or(|ns| caller.role.allows(read_role(ns)))
}

/// Whether a watch of `caller` passes `event` on: a change of a key it may
/// read (see [`may_read`]); progress (no key) and errors always.
pub(crate) fn may_see<E>(caller: &Caller, event: &Result<WatchEvent, E>) -> std::future::Ready<bool> {
    std::future::ready(event.as_ref().is_ok_and(|e| may_read(caller, &e.key)) || event.is_err())
}

/// Refuses `caller` the raw read `rpc` of `key_or_prefix` when it lies in a
/// namespace its role may not read (see [`read_role`]); a prefix that spans
/// several namespaces (`""`, `"a"`) is allowed, its answer filtered with
/// [`may_read`].
///
/// # Errors
///
/// `PERMISSION_DENIED` naming the namespace, the role it needs and the
/// dedicated call.
pub(crate) fn check_read(caller: &Caller, rpc: Rpc, key_or_prefix: &str) -> Result<(), Status> {
    let Some(ns) = namespace_of(key_or_prefix) else { return Ok(()) };
    let needed = read_role(ns);
    if caller.role.allows(needed) {
        return Ok(());
    }
    let dedicated = match ns {
        Namespace::Audit => " (as ListAudit does)",
        Namespace::Users => " (as ListUsers does)",
        _ => "",
    };
    Err(Status::permission_denied(format!(
        "{} of {} needs the {needed} role{dedicated}; user {:?} is {}",
        rpc.name(),
        ns.prefix(),
        caller.name,
        with_article(caller.role)
    )))
}

/// `an admin`, `an operator`, `a viewer`.
fn with_article(role: Role) -> String {
    let article = if role.as_str().starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {role}")
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
