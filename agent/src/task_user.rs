//! Who a task runs as, and whether that user can reach its sandbox. The
//! choice weighs the task's own request, its framework's user (Mesos'
//! `FrameworkInfo.user`), the agent's `--task-user` and the agent's own user;
//! it is a pure function over a user lookup, so every rule is tested
//! without /etc/passwd. Whether the user can reach its sandbox reads the
//! modes of the directories above it (the one check here that touches the
//! file system). Switching users happens in the task wrapper.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Who runs tasks that name no user that may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultTaskUser {
    /// The agent's own user, for a personal cluster (`mezz dev`): tasks
    /// feel local. Framework users are not used.
    Agent,
    /// This user (`--task-user`; `nobody` unless configured).
    Named(String),
}

impl Default for DefaultTaskUser {
    fn default() -> Self {
        DefaultTaskUser::Named(NOBODY.to_string())
    }
}

/// The unprivileged user tasks run as by default.
pub const NOBODY: &str = "nobody";

/// A user account of this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl Account {
    /// Root (uid 0), whatever its name.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Looks `name` up in the system's user database.
pub fn lookup(name: &str) -> Result<Option<Account>, String> {
    nix::unistd::User::from_name(name)
        .map_err(|e| format!("cannot look up user '{name}': {e}"))
        .map(|u| {
            u.map(|u| Account {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
        })
}

/// Who one task runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunAs {
    /// The agent's own user: no switch.
    Agent,
    /// This account.
    User(Account),
}

/// The agent's rules for choosing a task's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Who runs tasks that name no usable user.
    pub default: DefaultTaskUser,
    /// `--allow-root-tasks`: a task or framework may ask for root.
    pub allow_root: bool,
    /// The agent's effective uid; only root can switch users.
    pub agent_uid: u32,
}

impl Policy {
    /// The user of a task that asks for `task_user` (`CommandInfo.user`,
    /// may be empty) of a framework whose user is `framework_user` (may be
    /// empty):
    ///
    /// - a user the task names must exist, and may be root only with
    ///   `--allow-root-tasks`; otherwise the launch fails, saying why;
    /// - else the framework's user, when it exists here and is not root
    ///   (root only with `--allow-root-tasks`), unless the default is the
    ///   agent's own user;
    /// - else the default.
    ///
    /// An agent that is not root runs every task as itself and refuses a
    /// task that names another user.
    pub fn choose(
        &self,
        task_user: &str,
        framework_user: &str,
        lookup: impl Fn(&str) -> Result<Option<Account>, String>,
    ) -> Result<RunAs, String> {
        let (task_user, framework_user) = (task_user.trim(), framework_user.trim());
        if self.agent_uid != 0 {
            if task_user.is_empty() {
                return Ok(RunAs::Agent);
            }
            return match lookup(task_user)? {
                Some(a) if a.uid == self.agent_uid => Ok(RunAs::Agent),
                _ => Err(format!(
                    "the task asks to run as user '{task_user}', but this agent does not run as root and cannot switch users"
                )),
            };
        }
        if !task_user.is_empty() {
            let account = lookup(task_user)?
                .ok_or_else(|| format!("user '{task_user}' does not exist on this agent"))?;
            if account.is_root() && !self.allow_root {
                return Err(format!(
                    "the task asks to run as root ('{task_user}'), which this agent does not allow (start it with --allow-root-tasks)"
                ));
            }
            return Ok(RunAs::User(account));
        }
        let default = match &self.default {
            DefaultTaskUser::Agent => return Ok(RunAs::Agent),
            DefaultTaskUser::Named(name) => name,
        };
        if !framework_user.is_empty() {
            // A framework user this machine does not have, or root where
            // root is not allowed, falls back to the default: the
            // framework's user is a preference, not a demand.
            if let Ok(Some(a)) = lookup(framework_user) {
                if !a.is_root() || self.allow_root {
                    return Ok(RunAs::User(a));
                }
            }
        }
        let account = lookup(default)?
            .ok_or_else(|| format!("--task-user '{default}' does not exist on this agent"))?;
        if account.is_root() && !self.allow_root {
            return Err(format!(
                "--task-user '{default}' is root, which this agent does not allow (start it with --allow-root-tasks)"
            ));
        }
        Ok(RunAs::User(account))
    }
}

/// A directory above the work dir that a task's user cannot pass through.
#[derive(Debug, PartialEq, Eq)]
pub struct NotTraversable {
    /// The directory.
    pub dir: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

/// Checks that `account` may search every directory above `dir` (not
/// `dir` itself): owner, group or other execute bit, as the kernel would
/// (ACLs are not consulted). Root passes everywhere.
pub fn check_traversable(
    dir: &Path,
    account: &Account,
    groups: &[u32],
) -> Result<(), NotTraversable> {
    if account.is_root() {
        return Ok(());
    }
    let mut cur = dir.parent();
    while let Some(d) = cur {
        if let Ok(meta) = std::fs::metadata(d) {
            let mode = meta.mode() & 0o7777;
            let bit = if meta.uid() == account.uid {
                0o100
            } else if meta.gid() == account.gid || groups.contains(&meta.gid()) {
                0o010
            } else {
                0o001
            };
            if mode & bit == 0 {
                return Err(NotTraversable {
                    dir: d.to_path_buf(),
                    mode,
                });
            }
        }
        cur = d.parent();
    }
    Ok(())
}

/// The supplementary groups of `account` (its primary group included).
pub fn groups_of(account: &Account) -> Vec<u32> {
    let Ok(name) = std::ffi::CString::new(account.name.as_str()) else {
        return vec![account.gid];
    };
    nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(account.gid))
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![account.gid])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(name: &str, uid: u32) -> Account {
        Account {
            name: name.into(),
            uid,
            gid: uid,
        }
    }

    fn users(name: &str) -> Result<Option<Account>, String> {
        Ok(match name {
            "root" | "toor" => Some(acct(name, 0)),
            "nobody" => Some(acct("nobody", 65534)),
            "alice" => Some(acct("alice", 1000)),
            "svc" => Some(acct("svc", 998)),
            _ => None,
        })
    }

    fn policy(default: DefaultTaskUser, allow_root: bool) -> Policy {
        Policy {
            default,
            allow_root,
            agent_uid: 0,
        }
    }

    fn named(n: &str) -> DefaultTaskUser {
        DefaultTaskUser::Named(n.into())
    }

    fn user(name: &str) -> RunAs {
        RunAs::User(users(name).unwrap().unwrap())
    }

    #[test]
    fn default_is_the_task_user_and_framework_users_are_preferred() {
        let p = policy(named("nobody"), false);
        assert_eq!(p.choose("", "", users), Ok(user("nobody")));
        assert_eq!(p.choose("", "alice", users), Ok(user("alice")));
        // Unknown here, or root where root is not allowed: the default.
        assert_eq!(p.choose("", "bob", users), Ok(user("nobody")));
        assert_eq!(p.choose("", "root", users), Ok(user("nobody")));
        assert_eq!(p.choose("", "toor", users), Ok(user("nobody")));
        let p = policy(named("svc"), false);
        assert_eq!(p.choose("", " ", users), Ok(user("svc")));
    }

    #[test]
    fn root_only_when_allowed_and_asked_for() {
        let p = policy(named("nobody"), false);
        let e = p.choose("root", "", users).unwrap_err();
        assert!(e.contains("--allow-root-tasks"), "{e}");
        let e = p.choose("toor", "alice", users).unwrap_err();
        assert!(e.contains("root"), "{e}");
        let p = policy(named("nobody"), true);
        assert_eq!(p.choose("root", "", users), Ok(user("root")));
        assert_eq!(p.choose("", "root", users), Ok(user("root")));
        // Allowed is not asked for: the default stays unprivileged.
        assert_eq!(p.choose("", "", users), Ok(user("nobody")));
        let p = policy(named("root"), false);
        assert!(p.choose("", "", users).unwrap_err().contains("--task-user"));
    }

    #[test]
    fn a_named_user_must_exist() {
        let p = policy(named("nobody"), true);
        assert_eq!(p.choose("alice", "svc", users), Ok(user("alice")));
        let e = p.choose("bob", "", users).unwrap_err();
        assert_eq!(e, "user 'bob' does not exist on this agent");
        let p = policy(named("ghost"), false);
        let e = p.choose("", "", users).unwrap_err();
        assert!(e.contains("'ghost'"), "{e}");
    }

    #[test]
    fn the_agents_own_user_for_a_personal_cluster() {
        let p = policy(DefaultTaskUser::Agent, true);
        assert_eq!(p.choose("", "alice", users), Ok(RunAs::Agent));
        assert_eq!(p.choose("", "", users), Ok(RunAs::Agent));
        assert_eq!(p.choose("svc", "", users), Ok(user("svc")));
    }

    #[test]
    fn an_agent_that_is_not_root_runs_tasks_as_itself() {
        let p = Policy {
            default: named("nobody"),
            allow_root: false,
            agent_uid: 1000,
        };
        assert_eq!(p.choose("", "svc", users), Ok(RunAs::Agent));
        assert_eq!(p.choose("alice", "", users), Ok(RunAs::Agent));
        let e = p.choose("svc", "", users).unwrap_err();
        assert!(e.contains("cannot switch users"), "{e}");
    }

    #[test]
    fn traversal_follows_the_mode_bits() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let mid = top.path().join("mid");
        let work = mid.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(top.path(), 0o711);
        set(&mid, 0o700);
        let me = nix::unistd::geteuid().as_raw();
        let stranger = Account {
            name: "x".into(),
            uid: me.wrapping_add(12345),
            gid: 54321,
        };
        let e = check_traversable(&work, &stranger, &[54321]).unwrap_err();
        assert_eq!(
            e,
            NotTraversable {
                dir: mid.clone(),
                mode: 0o700
            }
        );
        set(&mid, 0o701);
        assert_eq!(check_traversable(&work, &stranger, &[54321]), Ok(()));
        // The directory itself is the agent's to set up.
        set(&work, 0o700);
        assert_eq!(check_traversable(&work, &stranger, &[54321]), Ok(()));
        // The owner's bits decide for the owner, whatever others may do.
        if me == 0 {
            std::os::unix::fs::chown(&mid, Some(stranger.uid), None).unwrap();
            set(&mid, 0o601);
            assert!(check_traversable(&work, &stranger, &[54321]).is_err());
        }
        set(&mid, 0o700);
        assert_eq!(check_traversable(&work, &acct("root", 0), &[]), Ok(()));
    }
}
