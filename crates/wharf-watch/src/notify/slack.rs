//! Slack-compatible incoming webhooks: `{"text": …}` is what Slack, Mattermost and
//! Rocket.Chat all accept.

use serde_json::{json, Map, Value};

use super::post;
use super::settings::{redact_url, SlackTarget};

pub(super) struct Slack {
    url: String,
    username: Option<String>,
    channel: Option<String>,
    client: reqwest::Client,
}

impl Slack {
    pub(super) fn new(target: &SlackTarget, client: &reqwest::Client) -> Slack {
        Slack {
            url: target.url.clone(),
            username: target.username.clone(),
            channel: target.channel.clone(),
            client: client.clone(),
        }
    }

    /// `text`: the report's summary, or the user's template rendered.
    pub(super) fn body(&self, text: &str) -> Value {
        let mut body = Map::new();
        body.insert("text".to_owned(), json!(text));
        if let Some(username) = &self.username {
            body.insert("username".to_owned(), json!(username));
        }
        if let Some(channel) = &self.channel {
            body.insert("channel".to_owned(), json!(channel));
        }
        Value::Object(body)
    }

    pub(super) async fn send(&self, text: &str) -> Result<(), String> {
        post(self.client.post(&self.url).json(&self.body(text))).await
    }

    pub(super) fn describe(&self) -> String {
        format!("slack {}", redact_url(&self.url))
    }
}
