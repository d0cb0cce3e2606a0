//! MSC3381 polls, as Element sends and shows them today: the unstable
//! `org.matrix.msc3381.poll.*` event types (the stable `m.poll.*` ones need an
//! extensible-events room version).
//!
//! Typed serde structs of our own instead of ruma's `unstable-msc3381` feature: that feature
//! brings ruma's whole extensible-events model (MSC1767 text/HTML blocks, the stable and
//! unstable poll families, their aggregation) for the three small contents used here, and
//! every kilobyte of code is resident (the idle budget is 14 MiB, docs/performance.md).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The event type of a poll's start.
pub const START: &str = "org.matrix.msc3381.poll.start";
/// The event type of a poll's end.
pub const END: &str = "org.matrix.msc3381.poll.end";

/// One answer of a poll: its id (what votes name) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The id a vote names.
    pub id: String,
    /// What people see.
    pub text: String,
}

/// The content of a disclosed, single-choice poll asking `question`. `fallback` is what clients
/// without polls show (it should list the answers and how else to answer).
pub fn start(question: &str, choices: &[Choice], fallback: &str) -> Value {
    let answers: Vec<Value> = choices
        .iter()
        .map(|c| json!({"id": c.id, "org.matrix.msc1767.text": c.text}))
        .collect();
    json!({
        START: {
            "question": {"org.matrix.msc1767.text": question},
            "kind": "org.matrix.msc3381.poll.disclosed",
            "max_selections": 1,
            "answers": answers,
        },
        "org.matrix.msc1767.text": fallback,
        "body": fallback,
    })
}

/// The content that ends a poll (the poll's event id is filled in by the outbox, see
/// [`super::outbox::Outbox::queue_event_in`]). `text` says what was decided.
pub fn end(text: &str) -> Value {
    json!({
        "m.relates_to": {"rel_type": "m.reference", "event_id": ""},
        END: {},
        "org.matrix.msc1767.text": text,
        "body": text,
    })
}

/// A vote, as received: which poll (the event it references) and the chosen answer ids.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Response {
    /// The poll's start event.
    #[serde(rename = "m.relates_to")]
    pub relates_to: Reference,
    /// The choice (unstable name).
    #[serde(rename = "org.matrix.msc3381.poll.response", alias = "m.poll.response")]
    pub response: Selections,
}

/// An `m.reference` relation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Reference {
    /// The related event.
    pub event_id: String,
}

/// The answers chosen in a vote.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Selections {
    /// Answer ids; an empty list withdraws the vote.
    #[serde(default)]
    pub answers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_is_what_element_reads_and_a_vote_parses() {
        let choices = [
            Choice {
                id: "0".into(),
                text: "blue".into(),
            },
            Choice {
                id: "1".into(),
                text: "green".into(),
            },
        ];
        let poll = start("Colour?", &choices, "Colour? blue or green");
        assert_eq!(
            poll[START]["answers"][1]["org.matrix.msc1767.text"],
            "green"
        );
        assert_eq!(poll[START]["max_selections"], 1);
        let vote: Response = serde_json::from_value(json!({
            "m.relates_to": {"rel_type": "m.reference", "event_id": "$poll"},
            "org.matrix.msc3381.poll.response": {"answers": ["1"]}
        }))
        .unwrap();
        assert_eq!(
            (
                vote.relates_to.event_id.as_str(),
                vote.response.answers.as_slice()
            ),
            ("$poll", &["1".to_owned()][..])
        );
        assert_eq!(
            end("Answered: green")["m.relates_to"]["rel_type"],
            "m.reference"
        );
    }
}
