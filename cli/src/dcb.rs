//! Tags and queries (Dynamic Consistency Boundaries) as the command line takes them.
//!
//! A tag (`--tag`) is 1..=255 bytes of UTF-8 (`limits::MAX_TAG_BYTES`); an event carries at
//! most 64 distinct tags (`limits::MAX_TAGS_PER_EVENT`).
//!
//! A query (`--query`, `--fail-if-match`) is JSON: an array of items, each an object with
//! `"types"` (event types, any of which matches; absent or `[]` = any type) and `"tags"` (tags,
//! all of which an event must carry; absent or `[]` = any tags); an event matches the query
//! when it matches any item. An item must name at least one type or tag. The word `all` (bare
//! or as the JSON string `"all"`) is the query that matches every event; `[]` is refused (it
//! would match nothing).
//!
//! ```text
//! [{"types":["course_defined","student_subscribed"],"tags":["course:c1"]},
//!  {"types":["student_subscribed"],"tags":["student:s1"]}]
//! ```

use serde::Deserialize;
use strata::{limits, Query, QueryItem};

/// One query item as written by hand.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemJson {
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// Checks one tag; the error says what is wrong with it.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err(format!(
            "a tag must be 1..={} bytes of UTF-8, got an empty tag",
            limits::MAX_TAG_BYTES
        ));
    }
    if tag.len() > limits::MAX_TAG_BYTES {
        return Err(format!(
            "a tag must be 1..={} bytes of UTF-8, got {} bytes",
            limits::MAX_TAG_BYTES,
            tag.len()
        ));
    }
    Ok(())
}

/// Parses `--tag` (clap value parser).
pub fn parse_tag(text: &str) -> Result<String, String> {
    check_tag(text)?;
    Ok(text.to_owned())
}

/// Checks the tags of one event: each valid, at most `limits::MAX_TAGS_PER_EVENT` distinct.
pub fn check_event_tags(tags: &[String]) -> Result<(), String> {
    for (index, tag) in tags.iter().enumerate() {
        check_tag(tag).map_err(|why| format!("tags[{index}]: {why}"))?;
    }
    let mut distinct: Vec<&str> = tags.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() > limits::MAX_TAGS_PER_EVENT {
        return Err(format!(
            "an event carries {} distinct tags, over the limit of {}",
            distinct.len(),
            limits::MAX_TAGS_PER_EVENT
        ));
    }
    Ok(())
}

/// Parses a query (clap value parser for `--query` and `--fail-if-match`).
pub fn parse_query(text: &str) -> Result<Query, String> {
    let trimmed = text.trim();
    if trimmed == "all" {
        return Ok(Query::all());
    }
    let value: serde_json::Value =
        serde_json::from_str(trimmed).map_err(|e| format!("the query is not valid JSON: {e}"))?;
    if value.as_str() == Some("all") {
        return Ok(Query::all());
    }
    let items: Vec<ItemJson> = serde_json::from_value(value).map_err(|e| {
        format!(
            "the query must be \"all\" or an array of {{\"types\": [...], \"tags\": [...]}} items: {e}"
        )
    })?;
    if items.is_empty() {
        return Err(
            "the query has no items (it would match nothing); use all to match every event".into(),
        );
    }
    for (index, item) in items.iter().enumerate() {
        if item.types.is_empty() && item.tags.is_empty() {
            return Err(format!(
                "query item {index} has neither types nor tags; use all to match every event"
            ));
        }
        for tag in &item.tags {
            check_tag(tag).map_err(|why| format!("query item {index}: {why}"))?;
        }
        for name in &item.types {
            if name.is_empty() || name.len() > limits::MAX_EVENT_TYPE_BYTES {
                return Err(format!(
                    "query item {index}: an event type must be 1..={} bytes, got {} bytes",
                    limits::MAX_EVENT_TYPE_BYTES,
                    name.len()
                ));
            }
        }
    }
    let query = Query::from_items(items.into_iter().map(|item| QueryItem {
        event_types: item.types,
        tags: item.tags,
    }));
    // The limits on counts (items, entries per item).
    query.validate().map_err(|e| e.to_string())?;
    Ok(query)
}

/// The one-item query of `read --type ... --tag ...`: any of `types` (any type when none) and
/// every one of `tags`.
pub fn shorthand_query(types: Vec<String>, tags: Vec<String>) -> Result<Query, String> {
    let query = Query::item(QueryItem {
        event_types: types,
        tags,
    });
    query.validate().map_err(|e| e.to_string())?;
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_arrays_of_items_or_all() {
        let query = parse_query(
            r#"[{"types":["a","b"],"tags":["course:c1"]},{"tags":["student:s1","x"]},{"types":["c"]}]"#,
        )
        .unwrap();
        assert_eq!(
            query,
            Query::from_items([
                QueryItem::types(["a", "b"]).with_tags(["course:c1"]),
                QueryItem::tags(["student:s1", "x"]),
                QueryItem::types(["c"]),
            ])
        );
        assert!(parse_query("all").unwrap().is_all());
        assert!(parse_query(" \"all\" ").unwrap().is_all());
    }

    #[test]
    fn bad_queries_say_why() {
        let long = "x".repeat(256);
        let too_many: Vec<String> = (0..=limits::MAX_QUERY_ITEMS)
            .map(|i| format!(r#"{{"tags":["t{i}"]}}"#))
            .collect();
        let too_many = format!("[{}]", too_many.join(","));
        for (text, reason) in [
            ("[{\"tags\":[\"a\"]", "not valid JSON"),
            ("[]", "no items"),
            ("{}", "array of"),
            ("\"everything\"", "array of"),
            (r#"[{"tag":["a"]}]"#, "unknown field `tag`"),
            (r#"[{}]"#, "query item 0 has neither types nor tags"),
            (
                r#"[{"tags":["a"]},{"tags":[""]}]"#,
                "query item 1: a tag must be 1..=255 bytes",
            ),
            (&format!(r#"[{{"tags":["{long}"]}}]"#), "got 256 bytes"),
            (r#"[{"types":[""]}]"#, "an event type must be"),
            (r#"[{"tags":[1]}]"#, "invalid type: integer"),
            (&too_many, "query too large"),
        ] {
            let error = parse_query(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn tags_are_checked() {
        assert_eq!(parse_tag("course:c1").unwrap(), "course:c1");
        assert!(parse_tag("").unwrap_err().contains("empty"));
        assert!(parse_tag(&"é".repeat(128))
            .unwrap_err()
            .contains("256 bytes"));
        let many: Vec<String> = (0..=limits::MAX_TAGS_PER_EVENT)
            .map(|i| i.to_string())
            .collect();
        assert!(check_event_tags(&many)
            .unwrap_err()
            .contains("65 distinct tags"));
        let repeated = vec!["a".to_string(); 100];
        assert!(check_event_tags(&repeated).is_ok(), "repeats count once");
    }
}
