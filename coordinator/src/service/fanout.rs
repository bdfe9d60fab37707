//! Messages to many agents at once ([`Registry::send_each`]): a run's Prepare, its
//! delivery-round Ping, Start and Abort go out to every agent concurrently, so the last
//! agent does not wait for the first one's full stream (docs/design.md "Fleets").
//!
//! Each agent's outbound queue is a bounded channel (`handler`); a message that fits goes in
//! at once, and only those whose queue is full are awaited, all together.

use stampede_proto::pb::{self, coordinator_message};
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinSet;

use super::Registry;

impl Registry {
    /// Queues each `(agent, message)` on its agent's stream, concurrently; returns the
    /// agents whose stream is gone (not attached, or closed before the message fit).
    pub async fn send_each(
        &self,
        msgs: impl IntoIterator<Item = (String, coordinator_message::Msg)>,
    ) -> Vec<String> {
        let msgs: Vec<_> = {
            let agents = self.lock();
            msgs.into_iter()
                .map(|(id, msg)| {
                    let tx = agents.get(&id).map(|a| a.tx.clone());
                    (id, tx, msg)
                })
                .collect()
        };
        let mut gone = Vec::new();
        let mut waiting = JoinSet::new();
        for (id, tx, msg) in msgs {
            let Some(tx) = tx else {
                gone.push(id);
                continue;
            };
            let msg = Ok(pb::CoordinatorMessage { msg: Some(msg) });
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Closed(_)) => gone.push(id),
                // A full queue: wait for room alongside the others, never one after another.
                Err(TrySendError::Full(msg)) => {
                    waiting.spawn(async move { tx.send(msg).await.err().map(|_| id) });
                }
            }
        }
        while let Some(joined) = waiting.join_next().await {
            if let Ok(Some(id)) = joined {
                gone.push(id);
            }
        }
        gone
    }
}
