//! The answers of recently applied [`Command::Once`] writes, so a retried forwarded write
//! is applied once. Part of the replicated state: every voter applies the same entries
//! in the same order, and snapshots carry the answers, so a retry deduplicates the same
//! way on whichever node leads when it arrives.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::cluster_metadata::ClusterMetadata;
use crate::command::{Command, CommandResult};
use crate::state_machine;

/// Answers kept. A forwarded write is retried for seconds (the forward timeout), during
/// which far fewer metadata changes are made.
pub(crate) const KEPT_ANSWERS: usize = 1024;

/// Request id -> answer, oldest first; at most [`KEPT_ANSWERS`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    from = "Vec<(uuid::Uuid, CommandResult)>",
    into = "Vec<(uuid::Uuid, CommandResult)>"
)]
pub(crate) struct AppliedRequests {
    order: VecDeque<uuid::Uuid>,
    answers: HashMap<uuid::Uuid, CommandResult>,
}

impl AppliedRequests {
    /// Applies `command` to `metadata` unless it is a [`Command::Once`] applied before,
    /// whose first answer is returned instead.
    pub(crate) fn apply(
        &mut self,
        metadata: &mut ClusterMetadata,
        command: Command,
    ) -> CommandResult {
        let Command::Once {
            request_id,
            command,
        } = command
        else {
            return state_machine::apply(metadata, command);
        };
        if let Some(answer) = self.answers.get(&request_id) {
            tracing::info!(%request_id, "a retried controller write was applied before; answering as then");
            return answer.clone();
        }
        let answer = state_machine::apply(metadata, *command);
        if self.order.len() >= KEPT_ANSWERS
            && let Some(oldest) = self.order.pop_front()
        {
            let _ = self.answers.remove(&oldest);
        }
        self.order.push_back(request_id);
        let _ = self.answers.insert(request_id, answer.clone());
        answer
    }
}

impl From<Vec<(uuid::Uuid, CommandResult)>> for AppliedRequests {
    fn from(list: Vec<(uuid::Uuid, CommandResult)>) -> Self {
        let mut requests = AppliedRequests::default();
        for (request_id, answer) in list {
            if requests.answers.insert(request_id, answer).is_none() {
                requests.order.push_back(request_id);
            }
        }
        requests
    }
}

impl From<AppliedRequests> for Vec<(uuid::Uuid, CommandResult)> {
    fn from(mut requests: AppliedRequests) -> Self {
        requests
            .order
            .iter()
            .filter_map(|id| requests.answers.remove(id).map(|answer| (*id, answer)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster_metadata::{BrokerRegistration, TopicId};
    use crate::command::{CommandError, CommandOutput, NewTopic};

    fn cluster() -> ClusterMetadata {
        let mut metadata = ClusterMetadata::default();
        for broker_id in 1..=3 {
            let _ = metadata.brokers.insert(
                broker_id,
                BrokerRegistration {
                    broker_id,
                    incarnation_id: uuid::Uuid::new_v4(),
                    host: "127.0.0.1".to_owned(),
                    port: 9092,
                    rack: None,
                    fenced: false,
                },
            );
        }
        metadata
    }

    fn create(name: &str) -> Command {
        Command::CreateTopic(NewTopic {
            name: name.to_owned(),
            topic_id: TopicId::random(),
            num_partitions: 3,
            replication_factor: 3,
            configs: BTreeMap::new(),
            internal: false,
        })
    }

    fn once(request_id: uuid::Uuid, command: Command) -> Command {
        Command::Once {
            request_id,
            command: Box::new(command),
        }
    }

    #[test]
    fn a_retried_write_is_applied_once_and_answered_as_the_first_time() {
        let mut metadata = cluster();
        let mut requests = AppliedRequests::default();
        let request_id = uuid::Uuid::new_v4();
        let command = create("orders");
        let first = requests.apply(&mut metadata, once(request_id, command.clone()));
        let topic_id = metadata.topic("orders").map(|topic| topic.topic_id);
        assert!(matches!(first, Ok(CommandOutput::Topic(_))), "{first:?}");
        let retried = requests.apply(&mut metadata, once(request_id, command.clone()));
        assert_eq!(
            retried, first,
            "the retry gets the first answer, not TOPIC_ALREADY_EXISTS"
        );
        assert_eq!(
            metadata.topic("orders").map(|topic| topic.topic_id),
            topic_id
        );
        // The same command under a new id is a new request.
        let again = requests.apply(&mut metadata, once(uuid::Uuid::new_v4(), command));
        assert!(
            matches!(again, Err(CommandError::TopicAlreadyExists(_))),
            "{again:?}"
        );
    }

    #[test]
    fn answers_survive_a_snapshot_and_the_oldest_are_forgotten() {
        let mut metadata = cluster();
        let mut requests = AppliedRequests::default();
        let ids: Vec<uuid::Uuid> = (0..KEPT_ANSWERS + 1)
            .map(|_| uuid::Uuid::new_v4())
            .collect();
        for (index, request_id) in ids.iter().enumerate() {
            let _ = requests.apply(
                &mut metadata,
                once(
                    *request_id,
                    Command::AllocateProducerIds {
                        count: 1 + index as i64 % 2,
                    },
                ),
            );
        }
        let json = serde_json::to_vec(&requests).unwrap();
        let mut restored: AppliedRequests = serde_json::from_slice(&json).unwrap();
        assert_eq!(restored, requests);
        let before = metadata.next_producer_id;
        // The newest is still known: a retry allocates nothing.
        let retried = restored.apply(
            &mut metadata,
            once(ids[KEPT_ANSWERS], Command::AllocateProducerIds { count: 1 }),
        );
        assert_eq!(metadata.next_producer_id, before, "{retried:?}");
        // The oldest was forgotten: it would apply again.
        let _ = restored.apply(
            &mut metadata,
            once(ids[0], Command::AllocateProducerIds { count: 1 }),
        );
        assert_eq!(metadata.next_producer_id, before + 1);
    }
}
