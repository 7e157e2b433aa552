//! Operator changes to who may do what: tokens and ACLs, proposed through
//! raft like every other replicated change. The records are made by the
//! caller (the secret never reaches the state machine, only its hash);
//! validation of the ACL document is `crate::security::acl`'s.

use mezz_proto::v1::{replicated_command::Command, AclDocument, ReplicatedCommand, TokenRecord};

use super::{CallError, Cluster, Effect};
use crate::security::{acl::Acls, tokens};

impl Cluster {
    fn propose(&mut self, command: Command) {
        self.effects.push(Effect::Propose(ReplicatedCommand {
            command: Some(command),
        }));
    }

    /// Adds a token (its record holds the salted hash only).
    pub fn add_token(&mut self, record: TokenRecord) -> Result<(), CallError> {
        tokens::check_principal(&record.principal).map_err(CallError::Invalid)?;
        if self.registry.tokens.contains_key(&record.id) {
            return Err(CallError::Invalid(format!(
                "token id {} is taken; create the token again",
                record.id
            )));
        }
        self.propose(Command::AddToken(record));
        Ok(())
    }

    /// Revokes the live tokens named by an id or a principal, at `at`
    /// (Unix seconds); the ids revoked.
    pub fn revoke_tokens(
        &mut self,
        id_or_principal: &str,
        at: f64,
    ) -> Result<Vec<String>, CallError> {
        let ids = tokens::to_revoke(&self.registry.tokens, id_or_principal);
        if ids.is_empty() {
            return Err(CallError::NotFound(format!(
                "no live token has id or principal '{id_or_principal}'; see `mezz token ls`"
            )));
        }
        self.propose(Command::RevokeTokens(mezz_proto::v1::RevokeTokens {
            ids: ids.clone(),
            at,
        }));
        Ok(ids)
    }

    /// Replaces the ACLs (`seed`: only if there are none yet). An empty
    /// document turns them off.
    pub fn set_acls(&mut self, json: &str, seed: bool) -> Result<(), CallError> {
        let json = if json.trim().is_empty() {
            String::new()
        } else {
            Acls::canonical(json).map_err(CallError::Invalid)?
        };
        self.propose(Command::SetAcls(AclDocument { json, seed }));
        Ok(())
    }
}
