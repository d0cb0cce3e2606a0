//! (being written) approvals: answers to prompts of kind approval.

use crate::{
    prompts::Response,
    state::AppState,
    store::{inbox, prompts::Prompt},
};

/// Acts on `response` to `prompt` and finishes `row`.
pub async fn on_answer(
    bridge: &AppState,
    row: &inbox::Row,
    prompt: &Prompt,
    response: &Response,
) -> anyhow::Result<()> {
    let _ = (prompt, response);
    Ok(inbox::finish_alone(&bridge.store, row.seq).await?)
}
