//! Paging parameters and the ListResponse message (RFC 7644 §3.4.2.4).

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The ListResponse message schema URN.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// The largest page served; advertised as `filter.maxResults`.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A page request: 1-based `startIndex` and `count`, already clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub start_index: u32,
    pub count: u32,
}

impl Page {
    /// Reads `startIndex` and `count` query parameters. A `startIndex` below 1 means 1, a negative
    /// `count` means 0 and one above [`MAX_PAGE_SIZE`] means the maximum; a non-integer is a 400.
    pub fn from_params(start_index: Option<&str>, count: Option<&str>) -> Result<Page> {
        let start = parse_int("startIndex", start_index)?.unwrap_or(1).max(1);
        let count = parse_int("count", count)?.unwrap_or(i64::from(MAX_PAGE_SIZE)).clamp(0, i64::from(MAX_PAGE_SIZE));
        Ok(Page {
            start_index: u32::try_from(start).unwrap_or(u32::MAX),
            count: u32::try_from(count).unwrap_or(MAX_PAGE_SIZE),
        })
    }
}

fn parse_int(name: &str, raw: Option<&str>) -> Result<Option<i64>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Error::invalid_value(format!("{name} must be an integer, not \"{s}\""))),
    }
}

/// A ListResponse; `itemsPerPage` is the number of resources actually returned.
pub fn list_response(total_results: u64, start_index: u32, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total_results,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_parameters_are_clamped_or_refused() {
        assert_eq!(Page::from_params(None, None).unwrap(), Page { start_index: 1, count: MAX_PAGE_SIZE });
        assert_eq!(Page::from_params(Some("0"), Some("-5")).unwrap(), Page { start_index: 1, count: 0 });
        assert_eq!(
            Page::from_params(Some("101"), Some("100000")).unwrap(),
            Page { start_index: 101, count: MAX_PAGE_SIZE }
        );
        assert!(Page::from_params(Some("x"), None).is_err());
    }

    #[test]
    fn list_response_counts_what_it_returns() {
        let r = list_response(5, 5, vec![json!({"id": "a"})]);
        assert_eq!(r["itemsPerPage"], 1);
        assert_eq!(r["totalResults"], 5);
        assert_eq!(r["Resources"][0]["id"], "a");
        assert_eq!(list_response(0, 1, vec![])["Resources"], json!([]));
    }
}
