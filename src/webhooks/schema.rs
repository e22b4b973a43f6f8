//! What a webhook receiver gets (for the OpenAPI document and README "Your
//! backend"; the sender writes the same shape with `serde_json::json!`).

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// One POST: `{"events": [...]}`, oldest first. Answer any 2xx to
/// acknowledge the whole batch; anything else and it is sent again.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBatch {
    pub events: Vec<WebhookEventBody>,
}

/// One event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventBody {
    /// Unique; an event may arrive more than once: deduplicate by it.
    pub id: String,
    /// `session_opened`, `session_closed`, `channel_occupied`,
    /// `channel_vacated`, `member_added`, `member_removed` or `broadcast`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened, Unix milliseconds.
    pub at: u64,
    /// The node it happened on.
    pub node: String,
    /// `session`, `user`, `remote_addr`, `endpoint` (opened); `session`,
    /// `user`, `reason`, `code`, `duration_ms` (closed); `topic` (channel);
    /// `topic`, `user`, `session` (member); `topic`, `event`, `payload`
    /// (broadcast).
    #[schema(value_type = Object)]
    pub data: Value,
}
