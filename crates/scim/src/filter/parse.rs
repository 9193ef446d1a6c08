//! The filter parser: a small lexer and a recursive-descent parser with `or` binding loosest,
//! then `and`, then `not` and parentheses.
//!
//! Liberal where identity providers are known to deviate: operators and keywords in any case,
//! unquoted string values (Entra), and a sub-attribute comparison after a value path
//! (`emails[type eq "work"].value eq "x"`, Entra), which is read as the equivalent
//! `emails[type eq "work" and value eq "x"]`. Bounded in length and nesting so that no input can
//! exhaust the stack.

use super::{AttrPath, CompValue, CompareOp, Filter, PatchPath};
use crate::error::{Error, Result};

/// The longest filter accepted, in bytes.
pub const MAX_LENGTH: usize = 4096;
/// The deepest nesting of parentheses, `not` and value paths accepted.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Str(String),
    Word(String),
}

fn lex(input: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            b')' => {
                tokens.push(Token::RParen);
                i += 1;
            }
            b'[' => {
                tokens.push(Token::LBracket);
                i += 1;
            }
            b']' => {
                tokens.push(Token::RBracket);
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(Error::invalid_filter("a quoted value is not closed")),
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                let quoted = input.get(start..i).unwrap_or_default();
                let s: String = serde_json::from_str(quoted)
                    .map_err(|_| Error::invalid_filter(format!("{quoted} is not a valid quoted value")))?;
                tokens.push(Token::Str(s));
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b'[' | b']' | b'"')
                {
                    i += 1;
                }
                tokens.push(Token::Word(input.get(start..i).unwrap_or_default().to_owned()));
            }
        }
    }
    Ok(tokens)
}

/// Parses a filter expression.
pub fn parse(input: &str) -> Result<Filter> {
    let mut p = Parser::new(input)?;
    if p.tokens.is_empty() {
        return Err(Error::invalid_filter("the filter is empty"));
    }
    let filter = p.or_expr(0, false)?;
    p.expect_end()?;
    Ok(filter)
}

/// Parses a PATCH `path`: `attrPath`, `attrPath[valFilter]` or `attrPath[valFilter].subAttr`.
pub fn parse_patch_path(input: &str) -> Result<PatchPath> {
    let mut p = Parser::new(input).map_err(to_path_error)?;
    let attr = match p.next() {
        Some(Token::Word(w)) => parse_attr_path(&w).map_err(to_path_error)?,
        _ => {
            return Err(Error::invalid_path(format!("\"{input}\" is not a valid attribute path")));
        }
    };
    let mut path = PatchPath { attr, filter: None, sub: None };
    if p.peek() == Some(&Token::LBracket) {
        p.next();
        if path.attr.sub.is_some() {
            return Err(Error::invalid_path(format!(
                "\"{input}\": a value filter must follow an attribute, not a sub-attribute"
            )));
        }
        path.filter = Some(p.or_expr(1, true).map_err(to_path_error)?);
        if p.next() != Some(Token::RBracket) {
            return Err(Error::invalid_path(format!("\"{input}\": the value filter is not closed with ]")));
        }
        if let Some(Token::Word(w)) = p.peek().cloned() {
            p.next();
            path.sub = Some(parse_sub_suffix(&w).map_err(to_path_error)?);
        }
    }
    if p.peek().is_some() {
        return Err(Error::invalid_path(format!("\"{input}\" is not a valid attribute path")));
    }
    Ok(path)
}

fn to_path_error(e: Error) -> Error {
    Error::invalid_path(e.detail)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn new(input: &str) -> Result<Self> {
        if input.len() > MAX_LENGTH {
            return Err(Error::invalid_filter(format!("the filter is longer than {MAX_LENGTH} characters")));
        }
        Ok(Parser { tokens: lex(input)?, pos: 0 })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn expect_end(&self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(Error::invalid_filter(format!("unexpected {} in the filter", describe(t)))),
        }
    }

    fn or_expr(&mut self, depth: usize, in_value_path: bool) -> Result<Filter> {
        let mut left = self.and_expr(depth, in_value_path)?;
        while self.peek_keyword("or") {
            self.next();
            let right = self.and_expr(depth, in_value_path)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self, depth: usize, in_value_path: bool) -> Result<Filter> {
        let mut left = self.unary(depth, in_value_path)?;
        while self.peek_keyword("and") {
            self.next();
            let right = self.unary(depth, in_value_path)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize, in_value_path: bool) -> Result<Filter> {
        if depth >= MAX_DEPTH {
            return Err(Error::invalid_filter(format!("the filter nests deeper than {MAX_DEPTH} levels")));
        }
        if self.peek_keyword("not") && matches!(self.tokens.get(self.pos + 1), Some(Token::LParen)) {
            self.next();
            let inner = self.unary(depth + 1, in_value_path)?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        match self.next() {
            Some(Token::LParen) => {
                let inner = self.or_expr(depth + 1, in_value_path)?;
                match self.next() {
                    Some(Token::RParen) => Ok(inner),
                    _ => Err(Error::invalid_filter("a parenthesis is not closed")),
                }
            }
            Some(Token::Word(w)) => self.attr_expr(&w, depth, in_value_path),
            Some(t) => Err(Error::invalid_filter(format!("expected an attribute name, found {}", describe(&t)))),
            None => Err(Error::invalid_filter("the filter ends where an expression was expected")),
        }
    }

    fn attr_expr(&mut self, word: &str, depth: usize, in_value_path: bool) -> Result<Filter> {
        let path = parse_attr_path(word)?;
        if self.peek() == Some(&Token::LBracket) {
            if in_value_path {
                return Err(Error::invalid_filter("value filters cannot be nested"));
            }
            if path.sub.is_some() {
                return Err(Error::invalid_filter(format!(
                    "{path}: a value filter must follow an attribute, not a sub-attribute"
                )));
            }
            self.next();
            let inner = self.or_expr(depth + 1, true)?;
            if self.next() != Some(Token::RBracket) {
                return Err(Error::invalid_filter("a value filter is not closed with ]"));
            }
            // Entra: `emails[type eq "work"].value eq "x"`.
            if let Some(Token::Word(w)) = self.peek().cloned()
                && w.starts_with('.')
            {
                self.next();
                let sub = parse_sub_suffix(&w)?;
                let tail = self.comparison(AttrPath::simple(&sub))?;
                return Ok(Filter::ValuePath(path, Box::new(Filter::And(Box::new(inner), Box::new(tail)))));
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.comparison(path)
    }

    fn comparison(&mut self, path: AttrPath) -> Result<Filter> {
        let op = match self.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("pr") => {
                return Ok(Filter::Present(path));
            }
            Some(Token::Word(w)) => CompareOp::parse(&w).ok_or_else(|| {
                Error::invalid_filter(format!(
                    "\"{w}\" is not a filter operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"
                ))
            })?,
            Some(t) => {
                return Err(Error::invalid_filter(format!(
                    "expected an operator after {path}, found {}",
                    describe(&t)
                )));
            }
            None => {
                return Err(Error::invalid_filter(format!("expected an operator after {path}")));
            }
        };
        let value = match self.next() {
            Some(Token::Str(s)) => CompValue::Str(s),
            Some(Token::Word(w)) => word_value(w),
            Some(t) => {
                return Err(Error::invalid_filter(format!(
                    "expected a value after {path} {}, found {}",
                    op.as_str(),
                    describe(&t)
                )));
            }
            None => {
                return Err(Error::invalid_filter(format!("expected a value after {path} {}", op.as_str())));
            }
        };
        Ok(Filter::Compare(path, op, value))
    }
}

/// An unquoted value: a keyword, a number, or (Entra) a bare string.
fn word_value(w: String) -> CompValue {
    if w.eq_ignore_ascii_case("true") {
        CompValue::Bool(true)
    } else if w.eq_ignore_ascii_case("false") {
        CompValue::Bool(false)
    } else if w.eq_ignore_ascii_case("null") {
        CompValue::Null
    } else if let Ok(serde_json::Value::Number(n)) = serde_json::from_str::<serde_json::Value>(&w) {
        CompValue::Num(n)
    } else {
        CompValue::Str(w)
    }
}

fn describe(t: &Token) -> String {
    match t {
        Token::LParen => "(".to_owned(),
        Token::RParen => ")".to_owned(),
        Token::LBracket => "[".to_owned(),
        Token::RBracket => "]".to_owned(),
        Token::Str(s) => format!("\"{s}\""),
        Token::Word(w) => format!("\"{w}\""),
    }
}

fn is_attr_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some('$') => s == "$ref",
        Some(c) if c.is_ascii_alphabetic() => chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        _ => false,
    }
}

fn parse_sub_suffix(w: &str) -> Result<String> {
    match w.strip_prefix('.') {
        Some(sub) if is_attr_name(sub) => Ok(sub.to_owned()),
        _ => Err(Error::invalid_filter(format!("\"{w}\" is not a sub-attribute"))),
    }
}

/// Parses a comma-separated list of attribute paths (`attributes`, `excludedAttributes`).
pub fn parse_attr_list(input: &str) -> Result<Vec<AttrPath>> {
    input
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_attr_path(s).map_err(|e| Error::invalid_value(e.detail)))
        .collect()
}

/// Parses `[urn:]name[.sub]`.
pub(crate) fn parse_attr_path(word: &str) -> Result<AttrPath> {
    let invalid = || Error::invalid_filter(format!("\"{word}\" is not a valid attribute name"));
    let (urn, rest) = if word.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
        let idx = word.rfind(':').ok_or_else(invalid)?;
        (Some(word[..idx].to_owned()), &word[idx + 1..])
    } else {
        (None, word)
    };
    let (name, sub) = match rest.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    if !is_attr_name(name) || sub.is_some_and(|s| !is_attr_name(s)) {
        return Err(invalid());
    }
    Ok(AttrPath { urn, name: name.to_owned(), sub: sub.map(str::to_owned) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ScimType;

    fn p(s: &str) -> Filter {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn okta_user_name_filter() {
        assert_eq!(
            p(r#"userName eq "jane.doe@acme.com""#),
            Filter::Compare(AttrPath::simple("userName"), CompareOp::Eq, CompValue::Str("jane.doe@acme.com".into()))
        );
    }

    #[test]
    fn operators_and_keywords_in_any_case() {
        assert_eq!(p(r#"userName EQ "a" AND active Eq TRUE"#).to_string(), r#"userName eq "a" and active eq true"#);
        assert_eq!(p("title PR").to_string(), "title pr");
    }

    #[test]
    fn unquoted_values_from_entra() {
        assert_eq!(
            p("externalId eq 0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"),
            Filter::Compare(
                AttrPath::simple("externalId"),
                CompareOp::Eq,
                CompValue::Str("0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef".into())
            )
        );
        assert_eq!(p("meta.version eq 3").to_string(), "meta.version eq 3");
    }

    #[test]
    fn precedence_and_parentheses() {
        assert_eq!(p("a eq 1 or b eq 2 and c eq 3").to_string(), "a eq 1 or b eq 2 and c eq 3");
        assert!(matches!(p("a eq 1 or b eq 2 and c eq 3"), Filter::Or(..)));
        assert!(matches!(p("(a eq 1 or b eq 2) and c eq 3"), Filter::And(..)));
        assert_eq!(p("(a eq 1 or b eq 2) and c eq 3").to_string(), "(a eq 1 or b eq 2) and c eq 3");
        assert_eq!(p("not (a eq 1)").to_string(), "not (a eq 1)");
    }

    #[test]
    fn value_paths_and_urns() {
        let f = p(r#"emails[type eq "work" and value co "@acme.com"]"#);
        assert_eq!(f.to_string(), r#"emails[type eq "work" and value co "@acme.com"]"#);
        let f = p(r#"emails[type eq "work"].value eq "a@b.c""#);
        assert_eq!(f.to_string(), r#"emails[type eq "work" and value eq "a@b.c"]"#);
        let f = p(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter eq "London""#);
        match f {
            Filter::Compare(path, ..) => {
                assert_eq!(path.urn.as_deref(), Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"));
                assert_eq!(path.name, "costCenter");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_filters_are_invalid_filter_errors() {
        for bad in [
            "",
            "userName",
            "userName eq",
            "userName zz \"a\"",
            "(userName eq \"a\"",
            "userName eq \"a",
            "userName eq \"a\" and",
            "emails[type eq \"work\"",
            "emails[type[x eq 1]]",
            "1abc eq 2",
            "userName eq \"a\" extra",
        ] {
            let err = parse(bad).expect_err(bad);
            assert_eq!(err.scim_type, ScimType::InvalidFilter, "{bad}");
            assert!(!err.detail.is_empty());
        }
    }

    #[test]
    fn length_and_depth_are_capped() {
        let long = format!("userName eq \"{}\"", "a".repeat(MAX_LENGTH));
        assert!(parse(&long).is_err());
        let deep = format!("{}a eq 1{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(parse(&deep).is_err());
        let deep_not = format!("{}a eq 1{}", "not (".repeat(200), ")".repeat(200));
        assert!(parse(&deep_not).is_err());
    }

    #[test]
    fn patch_paths() {
        let path = parse_patch_path(r#"members[value eq "2819c223"]"#).unwrap();
        assert_eq!(path.attr.name, "members");
        assert!(path.filter.is_some());
        let path = parse_patch_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(path.sub.as_deref(), Some("value"));
        assert_eq!(path.to_string(), r#"emails[type eq "work"].value"#);
        let path = parse_patch_path("name.givenName").unwrap();
        assert_eq!(path.attr.sub.as_deref(), Some("givenName"));
        let err = parse_patch_path("emails[").unwrap_err();
        assert_eq!(err.scim_type, ScimType::InvalidPath);
        assert!(parse_patch_path("a b").is_err());
    }
}
