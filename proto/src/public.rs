//! The public part of the protocol: what frameworks, agents and operator
//! tools send and read (`common.proto`, `scheduler.proto`, `agent.proto`,
//! `operator.proto`). Everything here is [`crate::v1`]'s own type under the
//! same name; what is left out is `internal.proto`, which only masters
//! exchange (raft batches, replicated commands and snapshots, the registry
//! records they carry).
//!
//! All the files are one package, `mezzanine.v1`, so that type paths stay
//! one module; this module is the list of what is public. A test checks it
//! against the `.proto` files, so a message added to a public file and
//! forgotten here (or an internal one listed here) fails the build's tests.

/// Re-exports each public file's messages and enums, and the modules the
/// generated code puts beside them (a message's `oneof`s, a service's
/// client and server); the test below reads the same list.
macro_rules! public_files {
    ($($file:literal => { types: [$($ty:ident),* $(,)?], modules: [$($module:ident),* $(,)?] $(,)? })*) => {
        $(pub use crate::v1::{$($ty,)* $($module,)*};)*

        #[cfg(test)]
        const FILES: &[(&str, &[&str], &[&str])] = &[
            $(($file, &[$(stringify!($ty)),*], &[$(stringify!($module)),*]),)*
        ];
    };
}

public_files! {
    "common.proto" => {
        types: [
            Range, Ranges, Set, Resource, AgentInfo, Capability, FrameworkInfo, CommandInfo,
            TaskInfo, HealthCheck, HttpHealthCheck, TcpHealthCheck, TaskState, TaskReason,
            StatusSource, TaskStatus, Empty,
        ],
        modules: [resource, health_check],
    }
    "scheduler.proto" => {
        types: [
            Offer, SubscribeRequest, Event, Subscribed, Offers, Rescind, Update, Failure, Error,
            Heartbeat, Filters, Launch, Operation, AcceptRequest, DeclineRequest, ReviveRequest,
            SuppressRequest, KillRequest, AcknowledgeRequest, AcknowledgeManyRequest, ReconcileTask,
            ReconcileRequest, TeardownRequest, Demand, SetDemandRequest,
        ],
        modules: [event, operation, scheduler_client, scheduler_server],
    }
    "agent.proto" => {
        types: [
            AgentTask, RegisterAgent, AgentHeartbeat, StatusUpdate, AgentMessage,
            AgentRegistered, LaunchTask, KillTask, StatusAck, AgentRefused, ShutdownFramework,
            MasterMessage, ReadFileRequest, TailFileRequest, ReadFileResponse, ListFilesRequest,
            FileEntry, ListFilesResponse, GpuUsage,
        ],
        modules: [
            agent_message, master_message, agent_gateway_client, agent_gateway_server,
            agent_files_client, agent_files_server,
        ],
    }
    "operator.proto" => {
        types: [
            MasterView, AgentView, FrameworkView, TaskView, TaskStateChange, RoleView,
            ClusterState, ServiceView, ServiceVersionView, ServiceReplicaView, GetStateRequest,
            OperatorKillRequest, OperatorKillResponse, GetLeaderRequest, GetLeaderResponse,
            SetQuotaRequest, SetWeightRequest, ListRolesRequest, ListRolesResponse,
            GrantTaskFilesRequest, TaskFilesGrant, GetAuditRequest, AuditEntries,
            CreateTokenRequest, CreateTokenResponse, RevokeTokenRequest, RevokeTokenResponse,
            ListTokensRequest, TokenView, ListTokensResponse, GetAclsRequest, AclDocument,
            SizeView, ListSizesRequest, ListSizesResponse, SetSizeRequest, RemoveSizeRequest,
            PriorityClassView, QueueEntryView, GpuUsageView, JobRecord, JobAttempt,
            SubmitJobsRequest, JobList, GetJobRequest, ListJobsRequest, UpdateJobRequest,
            ControlJobRequest, FireScheduleRequest,
        ],
        modules: [operator_client, operator_server],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The files this crate's build compiles that are not public.
    const INTERNAL_FILES: &[&str] = &["internal.proto"];

    fn proto_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
    }

    fn snake(name: &str) -> String {
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    /// A file's top-level messages and enums, and the modules prost and
    /// tonic generate for it: one per message with a `oneof`, a client and
    /// a server per service.
    fn declared(file: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let path = proto_dir().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let (mut types, mut modules) = (BTreeSet::new(), BTreeSet::new());
        let mut message = None;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (line.starts_with(' '), words.next(), words.next()) {
                (false, Some("message" | "enum"), Some(name)) => {
                    types.insert(name.to_string());
                    message = Some(name.to_string());
                }
                (false, Some("service"), Some(name)) => {
                    modules.insert(format!("{}_client", snake(name)));
                    modules.insert(format!("{}_server", snake(name)));
                    message = None;
                }
                (true, Some("oneof"), _) => {
                    let owner = message.as_deref().expect("a oneof outside a message");
                    modules.insert(snake(owner));
                }
                _ => {}
            }
        }
        (types, modules)
    }

    #[test]
    fn the_public_list_matches_the_public_files() {
        for (file, types, modules) in super::FILES {
            let (want_types, want_modules) = declared(file);
            let have_types: BTreeSet<String> = types.iter().map(|t| t.to_string()).collect();
            let have_modules: BTreeSet<String> = modules.iter().map(|m| m.to_string()).collect();
            assert_eq!(have_types, want_types, "messages and enums of {file}");
            assert_eq!(have_modules, want_modules, "generated modules of {file}");
        }
    }

    #[test]
    fn every_proto_file_is_public_or_internal() {
        let mut files = BTreeSet::new();
        for entry in std::fs::read_dir(proto_dir()).expect("reading the proto directory") {
            let name = entry.expect("a directory entry").file_name();
            let name = name.to_string_lossy().into_owned();
            if name.ends_with(".proto") {
                files.insert(name);
            }
        }
        let known: BTreeSet<String> = super::FILES
            .iter()
            .map(|(file, _, _)| file.to_string())
            .chain(INTERNAL_FILES.iter().map(|f| f.to_string()))
            .collect();
        assert_eq!(files, known);
        // The internal file declares something, and none of it is public.
        for file in INTERNAL_FILES {
            let (types, _) = declared(file);
            assert!(
                types.contains("ReplicatedCommand"),
                "{file} lost its commands"
            );
            for (public, listed, _) in super::FILES {
                for name in &types {
                    assert!(
                        !listed.contains(&name.as_str()),
                        "{name} of {file} listed as public in {public}"
                    );
                }
            }
        }
    }
}
