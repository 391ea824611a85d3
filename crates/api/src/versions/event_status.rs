//! 2026-12-06: an event says `status: "scheduled" | "cancelled"` in place
//! of `cancelled: true | false`, so that a state can be added later (say,
//! `postponed`) without another boolean. `cancelled_at` stays.
//!
//! Older versions get `cancelled` back, wherever an event is answered: the
//! events routes, an events feed's items and a share of an event.

use axum::http::Method;
use serde_json::Value;

use super::Change;

pub const CHANGE: Change = Change {
    since: "2026-12-06",
    summary: "events: `status` (\"scheduled\" | \"cancelled\") replaces `cancelled` (boolean)",
    applies,
    downgrade,
};

fn applies(_: &Method, route: &str) -> bool {
    route == "/v1/events"
        || route.starts_with("/v1/events/")
        || route == "/v1/feed"
        || route == "/v1/shares"
}

fn downgrade(route: &str, body: &mut Value) {
    match route {
        // `{event: {...}}` inside each feed item or the share.
        "/v1/feed" => {
            if let Some(items) = body.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    if let Some(event) = item.get_mut("event") {
                        to_cancelled(event);
                    }
                }
            }
        }
        "/v1/shares" => {
            if let Some(event) = body.get_mut("event") {
                to_cancelled(event);
            }
        }
        // An event, or a page of them.
        _ => match body.get_mut("items").and_then(Value::as_array_mut) {
            Some(items) => items.iter_mut().for_each(to_cancelled),
            None => to_cancelled(body),
        },
    }
}

/// `status` → `cancelled`, in an event object (anything else is left alone).
fn to_cancelled(event: &mut Value) {
    let Some(object) = event.as_object_mut() else {
        return;
    };
    if let Some(status) = object.remove("status") {
        object.insert(
            "cancelled".to_owned(),
            Value::Bool(status.as_str() == Some("cancelled")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_place_an_event_is_answered_gets_cancelled_back() {
        let mut one = json!({"id": 1, "status": "cancelled", "cancelled_at": "t"});
        downgrade("/v1/events/{id}", &mut one);
        assert_eq!(
            one,
            json!({"id": 1, "cancelled": true, "cancelled_at": "t"})
        );

        let mut page = json!({"items": [{"status": "scheduled"}], "next_cursor": null});
        downgrade("/v1/events", &mut page);
        assert_eq!(page["items"][0], json!({"cancelled": false}));

        let mut feed = json!({"items": [{"tenant_slug": "a", "event": {"status": "scheduled"}},
                                        {"tenant_slug": "a", "post": {"status": "x"}}]});
        downgrade("/v1/feed", &mut feed);
        assert_eq!(feed["items"][0]["event"], json!({"cancelled": false}));
        assert_eq!(
            feed["items"][1]["post"],
            json!({"status": "x"}),
            "posts untouched"
        );

        let mut share = json!({"event": {"status": "cancelled"}, "post": null});
        downgrade("/v1/shares", &mut share);
        assert_eq!(share["event"], json!({"cancelled": true}));
    }
}
