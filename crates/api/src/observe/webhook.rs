//! Alert webhooks: each open and resolve is POSTed to
//! `TENANTRY_ALERT_WEBHOOK` as `{event, alert}` with
//! `Tenantry-Signature: sha256=<hex HMAC-SHA256 of the body>` keyed by
//! `TENANTRY_ALERT_WEBHOOK_SECRET`. Deliveries are jobs of the durable queue
//! (kind `alert.webhook`, enqueued with the alert's row): a failed POST (no
//! answer, or not 2xx) is retried with the queue's backoff, and every
//! delivery is visible as a job.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac as _};
use tenantry_jobs::Job;
use tenantry_jobs::worker::{Done, Handler, JobContext, JobError};

/// Where alerts go and how they are signed.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Runs `alert.webhook` jobs.
pub struct Deliver {
    webhook: Webhook,
    client: reqwest::Client,
}

impl Deliver {
    pub fn new(webhook: Webhook) -> Self {
        Self {
            webhook,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }
}

#[async_trait]
impl Handler for Deliver {
    async fn run(&self, job: &Job, _: &JobContext) -> Result<Done, JobError> {
        let body = serde_json::to_vec(&job.payload).map_err(anyhow::Error::from)?;
        let res = self
            .client
            .post(&self.webhook.url)
            .header("content-type", "application/json")
            .header("tenantry-signature", signature(&self.webhook.secret, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("the webhook did not answer: {e}"))?;
        if !res.status().is_success() {
            return Err(anyhow::anyhow!("the webhook answered {}", res.status()).into());
        }
        metrics::counter!("tenantry_alert_webhooks_delivered_total").increment(1);
        Ok(Done::Completed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
