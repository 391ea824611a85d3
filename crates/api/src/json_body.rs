//! The page of posts, the list every member reads, a post, a page of its
//! comments and a page of members, written as JSON directly:
//! byte for byte what `serde_json` writes for the same value (the tests
//! compare the two on arbitrary pages), without its walk of every byte of
//! every key and string through an escape table. That walk was a fifth of
//! the server's instructions for an uncached `GET /v1/posts?limit=20`
//! (callgrind), and a cached page is written afresh for every request too.
//!
//! A view lists its fields once, in their declared order ([`object`]); names
//! are written as they are; a string is copied whole when it holds nothing
//! to escape (found by one pass the compiler vectorizes) and handed to
//! `serde_json` otherwise.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::pagination::Page;
use crate::routes::members::MemberView;
use crate::routes::origin::OriginView;
use crate::routes::posts::{CommentView, PostView};

/// A value that writes itself as `serde_json` would serialize it.
pub trait WriteJson {
    fn write_json(&self, out: &mut Vec<u8>);
}

/// A JSON response written with [`WriteJson`] (the same body and
/// `Content-Type` as `axum::Json`).
pub struct JsonBody<T>(pub T);

impl<T: WriteJson> IntoResponse for JsonBody<T> {
    fn into_response(self) -> Response {
        let mut out = Vec::with_capacity(4096);
        self.0.write_json(&mut out);
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            out,
        )
            .into_response()
    }
}

impl<T: WriteJson> WriteJson for Page<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        object(
            out,
            &[("items", &self.items), ("next_cursor", &self.next_cursor)],
        );
    }
}

impl WriteJson for PostView {
    fn write_json(&self, out: &mut Vec<u8>) {
        object(
            out,
            &[
                ("id", &self.id),
                ("author_id", &self.author_id),
                ("content", &self.content),
                ("like_count", &self.like_count),
                ("comment_count", &self.comment_count),
                ("created_at", &self.created_at),
                ("updated_at", &self.updated_at),
                ("origin", &self.origin),
            ],
        );
    }
}

impl WriteJson for CommentView {
    fn write_json(&self, out: &mut Vec<u8>) {
        object(
            out,
            &[
                ("id", &self.id),
                ("post_id", &self.post_id),
                ("author_id", &self.author_id),
                ("content", &self.content),
                ("created_at", &self.created_at),
            ],
        );
    }
}

impl WriteJson for MemberView {
    fn write_json(&self, out: &mut Vec<u8>) {
        object(
            out,
            &[
                ("user_id", &self.user_id),
                ("role", &self.role),
                ("email", &self.email),
                ("display_name", &self.display_name),
                ("display_in_feed", &self.display_in_feed),
                ("joined_at", &self.joined_at),
            ],
        );
    }
}

impl WriteJson for OriginView {
    fn write_json(&self, out: &mut Vec<u8>) {
        object(
            out,
            &[
                ("tenant_id", &self.tenant_id),
                ("id", &self.id),
                ("shared_by", &self.shared_by),
            ],
        );
    }
}

/// `{"name":value,...}` in the order given, as a derived `Serialize` writes
/// a struct's fields. The names are Rust field names: nothing to escape.
fn object(out: &mut Vec<u8>, fields: &[(&str, &dyn WriteJson)]) {
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        value.write_json(out);
    }
    out.push(b'}');
}

impl<T: WriteJson> WriteJson for Vec<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item.write_json(out);
        }
        out.push(b']');
    }
}

impl<T: WriteJson> WriteJson for Option<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Some(value) => value.write_json(out),
            None => out.extend_from_slice(b"null"),
        }
    }
}

impl WriteJson for String {
    fn write_json(&self, out: &mut Vec<u8>) {
        // What `serde_json` escapes: control characters, `"` and `\`. A
        // fold without an early exit, so the whole string is checked many
        // bytes at a time.
        let escapes = self.bytes().fold(false, |any, b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if escapes {
            // Writing to a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut *out, self);
        } else {
            out.push(b'"');
            out.extend_from_slice(self.as_bytes());
            out.push(b'"');
        }
    }
}

impl WriteJson for i32 {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
    }
}

impl WriteJson for bool {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

impl WriteJson for Uuid {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        out.push(b'"');
        out.extend_from_slice(self.hyphenated().encode_lower(&mut buf).as_bytes());
        out.push(b'"');
    }
}

impl WriteJson for DateTime<Utc> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 30];
        match crate::json_time::write(self, &mut buf) {
            Some(len) => {
                out.push(b'"');
                out.extend_from_slice(&buf[..len]);
                out.push(b'"');
            }
            // Years outside 0..=9999 and leap seconds: chrono's own form, as
            // `json_time::serialize` writes it (and elsewhere chrono's form:
            // `json_time` writes what chrono writes).
            None => {
                let _ = serde_json::to_writer(&mut *out, self);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use proptest::prelude::*;

    use super::*;

    fn same_as_serde<T: WriteJson + serde::Serialize>(page: &T) {
        let mut ours = Vec::new();
        page.write_json(&mut ours);
        let theirs = serde_json::to_vec(page).expect("serializes");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    fn view(content: &str, seconds: i64, nanos: u32, origin: Option<OriginView>) -> PostView {
        let t = Utc
            .timestamp_opt(seconds, nanos)
            .single()
            .expect("a valid instant");
        PostView {
            id: Uuid::now_v7(),
            author_id: Uuid::new_v4(),
            content: content.to_owned(),
            like_count: 3,
            comment_count: i32::MIN,
            created_at: t,
            updated_at: t,
            origin,
        }
    }

    #[test]
    fn a_post_alone_is_written_as_serde_json_writes_it() {
        let post = view("one \u{1} post", 86_400, 7, None);
        let mut ours = Vec::new();
        post.write_json(&mut ours);
        assert_eq!(ours, serde_json::to_vec(&post).expect("serializes"));
    }

    #[test]
    fn a_page_is_written_as_serde_json_writes_it() {
        let origin = OriginView {
            tenant_id: Uuid::new_v4(),
            id: Uuid::new_v4(),
            shared_by: Some(Uuid::new_v4()),
        };
        same_as_serde(&Page {
            items: vec![
                view("plain", 1_700_000_000, 0, None),
                view(
                    "quote \" back \\ nl \n nul \0 del \x7f",
                    -1,
                    123_000_000,
                    None,
                ),
                view(
                    "ünïcødé 🦀 \u{2028}",
                    253_402_300_799,
                    999_999_999,
                    Some(origin.clone()),
                ),
                view("", -62_167_219_200, 1_000, None),
                // A year past 9999: chrono's own form.
                view("far", 253_402_300_800, 5, None),
            ],
            next_cursor: Some("abc-_DEF".to_owned()),
        });
        same_as_serde(&Page {
            items: Vec::<PostView>::new(),
            next_cursor: None,
        });
        same_as_serde(&Page {
            items: vec![view(
                "x",
                0,
                0,
                Some(OriginView {
                    shared_by: None,
                    ..origin
                }),
            )],
            next_cursor: None,
        });
    }

    fn comment(content: &str, seconds: i64, nanos: u32) -> CommentView {
        CommentView {
            id: Uuid::now_v7(),
            post_id: Uuid::now_v7(),
            author_id: Uuid::new_v4(),
            content: content.to_owned(),
            created_at: Utc
                .timestamp_opt(seconds, nanos)
                .single()
                .expect("a valid instant"),
        }
    }

    #[test]
    fn a_page_of_comments_is_written_as_serde_json_writes_it() {
        same_as_serde(&Page {
            items: vec![
                comment("nice", 1_700_000_000, 0),
                comment("\"quoted\"\t🦀", -5, 1_500),
                comment("", 253_402_300_800, 0),
            ],
            next_cursor: Some("c".to_owned()),
        });
    }

    proptest! {
        #[test]
        fn any_page_of_members_is_written_as_serde_json_writes_it(
            members in proptest::collection::vec(
                (any::<u128>(), any::<String>(), proptest::option::of(any::<String>()),
                 proptest::option::of(any::<String>()), any::<bool>(),
                 -100_000_000_000_i64..300_000_000_000),
                0..5,
            ),
            cursor in proptest::option::of(any::<String>()),
        ) {
            let items = members
                .into_iter()
                .map(|(id, role, email, display_name, display_in_feed, seconds)| MemberView {
                    user_id: Uuid::from_u128(id),
                    role,
                    email,
                    display_name,
                    display_in_feed,
                    joined_at: Utc.timestamp_opt(seconds, 0).single().expect("a valid instant"),
                })
                .collect();
            same_as_serde(&Page { items, next_cursor: cursor });
        }

        #[test]
        fn any_page_of_comments_is_written_as_serde_json_writes_it(
            comments in proptest::collection::vec(
                (any::<String>(), -100_000_000_000_i64..300_000_000_000, 0_u32..1_000_000_000),
                0..5,
            ),
        ) {
            let items = comments
                .into_iter()
                .map(|(content, seconds, nanos)| comment(&content, seconds, nanos))
                .collect();
            same_as_serde(&Page { items, next_cursor: None });
        }

        #[test]
        fn any_page_is_written_as_serde_json_writes_it(
            posts in proptest::collection::vec(
                (any::<String>(), any::<i32>(), -100_000_000_000_i64..300_000_000_000, 0_u32..1_000_000_000,
                 any::<bool>(), any::<u128>(), proptest::option::of(any::<u128>())),
                0..5,
            ),
            cursor in proptest::option::of(any::<String>()),
        ) {
            let items = posts
                .into_iter()
                .map(|(content, n, seconds, nanos, shared, id, by)| {
                    let mut p = view(&content, seconds, nanos, None);
                    p.like_count = n;
                    p.origin = shared.then(|| OriginView {
                        tenant_id: Uuid::from_u128(id),
                        id: Uuid::from_u128(id.rotate_left(7)),
                        shared_by: by.map(Uuid::from_u128),
                    });
                    p
                })
                .collect();
            same_as_serde(&Page { items, next_cursor: cursor });
        }
    }
}
