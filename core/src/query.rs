//! Dynamic Consistency Boundaries (DCB, as specified at dcb.events): queries over event types
//! and tags, and the condition of a conditional append.
//!
//! A [`Query`] is a list of [`QueryItem`]s combined with OR; an item matches an event whose type
//! is one of the item's types (any type when it names none) and which carries every one of the
//! item's tags (any tags when it names none). An item must name at least one type or tag;
//! [`Query::all`] is the query that matches every event.

use crate::error::InvalidInput;
use crate::event::{Event, Position};
use crate::options::limits;

/// One item of a [`Query`]: event types (OR) and tags (AND).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueryItem {
    /// The event types, any of which matches; empty matches every type.
    pub event_types: Vec<String>,
    /// The tags, all of which an event must carry; empty matches any tags.
    pub tags: Vec<String>,
}

impl QueryItem {
    /// An item matching events of any of `event_types`, whatever their tags.
    pub fn types<S: Into<String>>(event_types: impl IntoIterator<Item = S>) -> Self {
        QueryItem {
            event_types: event_types.into_iter().map(Into::into).collect(),
            tags: Vec::new(),
        }
    }

    /// An item matching events that carry every one of `tags`, whatever their type.
    pub fn tags<S: Into<String>>(tags: impl IntoIterator<Item = S>) -> Self {
        QueryItem {
            event_types: Vec::new(),
            tags: tags.into_iter().map(Into::into).collect(),
        }
    }

    /// This item, further restricted to events that carry every one of `tags`.
    pub fn with_tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// This item, further restricted to events of any of `event_types`.
    pub fn with_types<S: Into<String>>(mut self, event_types: impl IntoIterator<Item = S>) -> Self {
        self.event_types
            .extend(event_types.into_iter().map(Into::into));
        self
    }

    /// Whether `event` matches this item (the test the store's indexes answer).
    pub fn matches(&self, event: &Event) -> bool {
        (self.event_types.is_empty()
            || self
                .event_types
                .iter()
                .any(|name| *name == *event.event_type))
            && self.tags.iter().all(|tag| event.has_tag(tag))
    }
}

/// A DCB query: items combined with OR, or every event ([`Query::all`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Query {
    /// `None`: every event.
    items: Option<Vec<QueryItem>>,
}

impl Query {
    /// The query that matches every event.
    pub fn all() -> Self {
        Query { items: None }
    }

    /// A query matching the events that match any of `items`. Checked where it is used: it
    /// needs at least one item, and every item at least one type or tag.
    pub fn from_items(items: impl IntoIterator<Item = QueryItem>) -> Self {
        Query {
            items: Some(items.into_iter().collect()),
        }
    }

    /// A query of one item.
    pub fn item(item: QueryItem) -> Self {
        Query::from_items([item])
    }

    /// A query of one item: events that carry every one of `tags`.
    pub fn tags<S: Into<String>>(tags: impl IntoIterator<Item = S>) -> Self {
        Query::item(QueryItem::tags(tags))
    }

    /// A query of one item: events of any of `event_types`.
    pub fn types<S: Into<String>>(event_types: impl IntoIterator<Item = S>) -> Self {
        Query::item(QueryItem::types(event_types))
    }

    /// This query with one more item (OR). On [`Query::all`] it changes nothing.
    pub fn or(mut self, item: QueryItem) -> Self {
        if let Some(items) = &mut self.items {
            items.push(item);
        }
        self
    }

    /// This query's items; `None` for [`Query::all`].
    pub fn items(&self) -> Option<&[QueryItem]> {
        self.items.as_deref()
    }

    /// Whether this is [`Query::all`].
    pub fn is_all(&self) -> bool {
        self.items.is_none()
    }

    /// Whether `event` matches this query.
    pub fn matches(&self, event: &Event) -> bool {
        match &self.items {
            None => true,
            Some(items) => items.iter().any(|item| item.matches(event)),
        }
    }

    /// Checks the query against the rules and limits: at least one item, each naming a type or
    /// a tag, every name within its length limit, and no more than the limits' counts.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let Some(items) = &self.items else {
            return Ok(());
        };
        if items.is_empty() {
            return Err(InvalidInput::EmptyQuery);
        }
        if items.len() > limits::MAX_QUERY_ITEMS {
            return Err(InvalidInput::QueryTooLarge {
                what: "the number of items",
                count: items.len(),
                limit: limits::MAX_QUERY_ITEMS,
            });
        }
        for (index, item) in items.iter().enumerate() {
            if item.event_types.is_empty() && item.tags.is_empty() {
                return Err(InvalidInput::EmptyQueryItem { index });
            }
            for (what, count) in [
                (
                    "the number of event types of an item",
                    item.event_types.len(),
                ),
                ("the number of tags of an item", item.tags.len()),
            ] {
                if count > limits::MAX_QUERY_ITEM_ENTRIES {
                    return Err(InvalidInput::QueryTooLarge {
                        what,
                        count,
                        limit: limits::MAX_QUERY_ITEM_ENTRIES,
                    });
                }
            }
            for name in &item.event_types {
                if name.is_empty() || name.len() > limits::MAX_EVENT_TYPE_BYTES {
                    return Err(InvalidInput::EventTypeLength { len: name.len() });
                }
            }
            for tag in &item.tags {
                check_tag(tag)?;
            }
        }
        Ok(())
    }
}

/// A tag is 1..=`limits::MAX_TAG_BYTES` bytes of UTF-8.
pub(crate) fn check_tag(tag: &str) -> Result<(), InvalidInput> {
    if tag.is_empty() || tag.len() > limits::MAX_TAG_BYTES {
        return Err(InvalidInput::TagLength {
            len: tag.len(),
            limit: limits::MAX_TAG_BYTES,
        });
    }
    Ok(())
}

/// The condition of a conditional append: fail if any event matching `fail_if_events_match`
/// has a position after `after`. Checked by the writer inside the write transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppendCondition {
    /// The query whose matching events make the append fail.
    pub fail_if_events_match: Query,
    /// Only events after this position count: usually the last position the decision read
    /// (0 counts every event).
    pub after: Position,
}

impl AppendCondition {
    /// Fail if an event matching `query` comes after `after`.
    pub fn new(query: Query, after: Position) -> Self {
        AppendCondition {
            fail_if_events_match: query,
            after,
        }
    }
}
