//! The scheduler API (`mezzanine.v1.Scheduler`): SUBSCRIBE opens the event
//! stream, every other call is a unary RPC answered by the state machine.

use mezz_proto::v1::{
    scheduler_server::Scheduler, AcceptRequest, AcknowledgeManyRequest, AcknowledgeRequest,
    DeclineRequest, Empty, Event, KillRequest, ReconcileRequest, ReviveRequest, SetDemandRequest,
    SubscribeRequest, SuppressRequest, TeardownRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::{denied, principal};
use super::guard::{audit, charge};
use super::{status_from, GuardedStream};
use crate::handle::{Call, Handle, Input};
use crate::security::RegistrationRefused;

/// Serves the scheduler API.
pub struct SchedulerApi {
    handle: Handle,
}

impl SchedulerApi {
    /// A service over the actor behind `handle`.
    pub fn new(handle: Handle) -> Self {
        SchedulerApi { handle }
    }

    async fn call(&self, call: Call) -> Result<Response<Empty>, Status> {
        self.handle
            .ask(|reply| Input::Call(call, reply))
            .await?
            .map_err(status_from)?;
        Ok(Response::new(Empty {}))
    }
}

fn need_framework(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "framework_id is empty; subscribe first and use the id from SUBSCRIBED",
        ));
    }
    Ok(())
}

/// The most acknowledgements one `AcknowledgeMany` may carry.
pub const MAX_ACKS_PER_CALL: usize = 4096;

/// Checks every entry of `req` before any is applied: a bad one refuses
/// the whole call, naming it.
fn many_acks(req: &AcknowledgeManyRequest) -> Result<Vec<(String, String, String)>, Status> {
    if req.acks.len() > MAX_ACKS_PER_CALL {
        return Err(Status::invalid_argument(format!(
            "{} acknowledgements in one call; at most {MAX_ACKS_PER_CALL}",
            req.acks.len()
        )));
    }
    req.acks
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if !a.framework_id.is_empty() && a.framework_id != req.framework_id {
                return Err(Status::invalid_argument(format!(
                    "acknowledgement {i} is for framework '{}', not '{}'",
                    a.framework_id, req.framework_id
                )));
            }
            if a.uuid.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "acknowledgement {i} (task '{}') has no uuid",
                    a.task_id
                )));
            }
            Ok((a.agent_id.clone(), a.task_id.clone(), a.uuid.clone()))
        })
        .collect()
}

/// Refuses a call for a framework another principal registered.
fn owned<T>(handle: &Handle, request: &Request<T>, id: &str) -> Result<(), Status> {
    handle
        .guard()
        .check_owner(principal(request).as_ref(), id)
        .map_err(|m| {
            tracing::info!(framework_id = id, "call refused: {m}");
            Status::permission_denied(m)
        })
}

#[tonic::async_trait]
impl Scheduler for SchedulerApi {
    type SubscribeStream = GuardedStream<Event>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let who = principal(&request);
        charge(self.handle.guard(), who.as_ref(), 1.0)?;
        // While a leader is being elected, a follower holds the
        // subscription of a framework that lost the old leader until it
        // knows the new one (or leads), instead of refusing it at once.
        super::hold_for_leader(&self.handle, &request).await?;
        let req = request.into_inner();
        let mut info = req
            .framework
            .ok_or_else(|| Status::invalid_argument("SubscribeRequest.framework is missing"))?;
        self.handle
            .guard()
            .check_registration(who.as_ref(), &mut info)
            .map_err(|r| match r {
                RegistrationRefused::NotOwner(m) => Status::permission_denied(m),
                RegistrationRefused::Denied(d) => denied(d),
            })?;
        let conn = self.handle.next_conn();
        let (tx, rx) = mpsc::channel(crate::handle::STREAM_QUEUE_LEN);
        self.handle
            .ask(|reply| Input::Subscribe(conn, req.protocol_version, info, tx, reply))
            .await?
            .map_err(status_from)?;
        Ok(Response::new(GuardedStream::new(
            ReceiverStream::new(rx),
            self.handle.clone(),
            Input::FrameworkGone(conn),
        )))
    }

    async fn accept(&self, request: Request<AcceptRequest>) -> Result<Response<Empty>, Status> {
        let who = principal(&request);
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        charge(
            self.handle.guard(),
            who.as_ref(),
            crate::security::accept_cost(request.get_ref()),
        )?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        self.handle
            .guard()
            .check_launch_users(who.as_ref(), &req)
            .map_err(denied)?;
        self.call(Call::Accept(req)).await
    }

    async fn decline(&self, request: Request<DeclineRequest>) -> Result<Response<Empty>, Status> {
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        charge(self.handle.guard(), principal(&request).as_ref(), 1.0)?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        self.call(Call::Decline {
            framework_id: req.framework_id,
            offer_ids: req.offer_ids,
            refuse_seconds: req.filters.and_then(|f| f.refuse_seconds),
        })
        .await
    }

    async fn revive(&self, request: Request<ReviveRequest>) -> Result<Response<Empty>, Status> {
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        charge(self.handle.guard(), principal(&request).as_ref(), 1.0)?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        self.call(Call::Revive(req.framework_id)).await
    }

    async fn suppress(&self, request: Request<SuppressRequest>) -> Result<Response<Empty>, Status> {
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        charge(self.handle.guard(), principal(&request).as_ref(), 1.0)?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        self.call(Call::Suppress(req.framework_id)).await
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<Empty>, Status> {
        let who = principal(&request);
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        charge(self.handle.guard(), principal(&request).as_ref(), 1.0)?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        audit(
            self.handle.guard(),
            who.as_ref(),
            "kill",
            serde_json::json!({"framework_id": req.framework_id, "task_id": req.task_id, "by": "framework"}),
        );
        self.call(Call::Kill {
            framework_id: req.framework_id,
            task_id: req.task_id,
            grace: req.grace_period_secs,
        })
        .await
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<Empty>, Status> {
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        charge(self.handle.guard(), principal(&request).as_ref(), 1.0)?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        self.call(Call::Acknowledge {
            framework_id: req.framework_id,
            agent_id: req.agent_id,
            task_id: req.task_id,
            uuid: req.uuid,
        })
        .await
    }

    async fn acknowledge_many(
        &self,
        request: Request<AcknowledgeManyRequest>,
    ) -> Result<Response<Empty>, Status> {
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        let n = request.get_ref().acks.len();
        charge(
            self.handle.guard(),
            principal(&request).as_ref(),
            n.max(1) as f64,
        )?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        let acks = many_acks(&req)?;
        self.call(Call::AcknowledgeMany {
            framework_id: req.framework_id,
            acks,
        })
        .await
    }

    async fn reconcile(
        &self,
        request: Request<ReconcileRequest>,
    ) -> Result<Response<Empty>, Status> {
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        charge(self.handle.guard(), principal(&request).as_ref(), 1.0)?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        self.call(Call::Reconcile(req.framework_id, req.tasks))
            .await
    }

    async fn teardown(&self, request: Request<TeardownRequest>) -> Result<Response<Empty>, Status> {
        let who = principal(&request);
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        charge(self.handle.guard(), principal(&request).as_ref(), 1.0)?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        audit(
            self.handle.guard(),
            who.as_ref(),
            "teardown",
            serde_json::json!({"framework_id": req.framework_id, "by": "framework"}),
        );
        self.call(Call::Teardown(req.framework_id)).await
    }

    async fn set_demand(
        &self,
        request: Request<SetDemandRequest>,
    ) -> Result<Response<Empty>, Status> {
        owned(&self.handle, &request, &request.get_ref().framework_id)?;
        charge(self.handle.guard(), principal(&request).as_ref(), 1.0)?;
        let req = request.into_inner();
        need_framework(&req.framework_id)?;
        self.call(Call::SetDemand(req)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(framework_id: &str, task: &str, uuid: &str) -> AcknowledgeRequest {
        AcknowledgeRequest {
            framework_id: framework_id.into(),
            agent_id: "a1".into(),
            task_id: task.into(),
            uuid: uuid.into(),
        }
    }

    #[test]
    fn acknowledgements_in_one_call_are_checked_before_any_is_applied() {
        let req = |acks| AcknowledgeManyRequest {
            framework_id: "fw".into(),
            acks,
        };
        // The request's framework may be left out of each entry.
        let ok = many_acks(&req(vec![ack("fw", "t1", "u1"), ack("", "t2", "u2")])).unwrap();
        assert_eq!(
            ok,
            vec![
                ("a1".into(), "t1".into(), "u1".into()),
                ("a1".into(), "t2".into(), "u2".into())
            ]
        );
        let e = many_acks(&req(vec![ack("fw", "t1", "u1"), ack("other", "t2", "u2")])).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message()
                .contains("acknowledgement 1 is for framework 'other'"),
            "{e}"
        );
        let e = many_acks(&req(vec![ack("fw", "t7", "")])).unwrap_err();
        assert!(e.message().contains("(task 't7') has no uuid"), "{e}");
        let too_many = (0..=MAX_ACKS_PER_CALL)
            .map(|i| ack("fw", "t", &i.to_string()))
            .collect();
        let e = many_acks(&req(too_many)).unwrap_err();
        assert!(e.message().contains("at most 4096"), "{e}");
    }
}
