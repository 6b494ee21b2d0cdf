//! Path templates in Envoy's `uri_template` syntax: `/products/{productId}`.
//!
//! A template is a sequence of `/`-separated segments, each one of:
//! - a literal (`products`);
//! - `*`: exactly one segment;
//! - `**`: any number of segments (last only);
//! - `{name}` or `{name=*}`: one segment, captured as `name`;
//! - `{name=**}`: the rest of the path (last only), captured as `name`.
//!
//! Matching is on the path without its query string and never allocates unless the
//! captures are asked for (explain does; the data path does not).

use std::fmt;

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One(Option<String>),
    Rest(Option<String>),
}

/// Why a template was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Templates are absolute paths.
    #[error("a path template must start with '/'")]
    NotAbsolute,
    /// `**` or `{x=**}` anywhere but the end.
    #[error("'**' may only be the last segment")]
    RestNotLast,
    /// `{` without `}`, `{}` or a name with odd characters.
    #[error(
        "invalid variable {0:?}: use {{name}}, {{name=*}} or {{name=**}} with name of letters, digits, '_'"
    )]
    BadVariable(String),
    /// Two variables with one name.
    #[error("variable {0:?} appears twice")]
    DuplicateVariable(String),
    /// `{` without its `}`.
    #[error("unclosed '{{' in segment {0:?}")]
    Unclosed(String),
    /// Braces or wildcards mixed with text inside one segment.
    #[error(
        "segment {0:?} mixes text with a variable or wildcard; a segment is either text, '*', '**' or one variable"
    )]
    MixedSegment(String),
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let rest = source.strip_prefix('/').ok_or(TemplateError::NotAbsolute)?;
        let mut segments = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let parts: Vec<&str> = rest.split('/').collect();
        let last = parts.len() - 1;
        for (i, part) in parts.iter().enumerate() {
            let seg = parse_segment(part)?;
            if let Segment::Rest(_) = seg
                && i != last
            {
                return Err(TemplateError::RestNotLast);
            }
            if let Segment::One(Some(n)) | Segment::Rest(Some(n)) = &seg {
                if names.contains(n) {
                    return Err(TemplateError::DuplicateVariable(n.clone()));
                }
                names.push(n.clone());
            }
            segments.push(seg);
        }
        Ok(Self {
            source: source.to_owned(),
            segments,
        })
    }

    /// Whether `source` uses template syntax at all (and so is not an exact path).
    pub fn is_template(source: &str) -> bool {
        source.contains(['{', '}', '*'])
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `path` (no query) matches.
    pub fn matches(&self, path: &str) -> bool {
        self.walk(path, &mut |_, _| {})
    }

    /// The captured variables if `path` matches, in template order.
    pub fn captures(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        self.walk(path, &mut |k, v| out.push((k.to_owned(), v.to_owned())))
            .then_some(out)
    }

    fn walk(&self, path: &str, capture: &mut dyn FnMut(&str, &str)) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        let count = self.segments.len();
        for (i, seg) in self.segments.iter().enumerate() {
            if let Segment::Rest(name) = seg {
                if let Some(n) = name {
                    capture(n, rest);
                }
                return true;
            }
            let (head, tail) = match rest.split_once('/') {
                Some((h, t)) => (h, Some(t)),
                None => (rest, None),
            };
            match seg {
                Segment::Literal(l) if l == head => {}
                Segment::One(name) if !head.is_empty() => {
                    if let Some(n) = name {
                        capture(n, head);
                    }
                }
                _ => return false,
            }
            match tail {
                Some(t) => rest = t,
                // The path ends here: a match if the template ends too, or only a
                // `**` (which may match nothing) follows.
                None => {
                    if i + 1 == count {
                        return true;
                    }
                    if i + 2 == count
                        && let Segment::Rest(name) = &self.segments[i + 1]
                    {
                        if let Some(n) = name {
                            capture(n, "");
                        }
                        return true;
                    }
                    return false;
                }
            }
        }
        // The template ended before the path did.
        false
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_segment(part: &str) -> Result<Segment, TemplateError> {
    match part {
        "*" => return Ok(Segment::One(None)),
        "**" => return Ok(Segment::Rest(None)),
        _ => {}
    }
    if let Some(inner) = part.strip_prefix('{') {
        let inner = match inner.strip_suffix('}') {
            Some(i) => i,
            None if !inner.contains('}') => return Err(TemplateError::Unclosed(part.to_owned())),
            None => return Err(TemplateError::MixedSegment(part.to_owned())),
        };
        let (name, pattern) = match inner.split_once('=') {
            Some((n, p)) => (n, p),
            None => (inner, "*"),
        };
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(TemplateError::BadVariable(part.to_owned()));
        }
        return match pattern {
            "*" => Ok(Segment::One(Some(name.to_owned()))),
            "**" => Ok(Segment::Rest(Some(name.to_owned()))),
            _ => Err(TemplateError::BadVariable(part.to_owned())),
        };
    }
    if part.contains(['{', '}', '*']) {
        return Err(TemplateError::MixedSegment(part.to_owned()));
    }
    Ok(Segment::Literal(part.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (template, path, expected captures or `None` for no match)
    type Case = (
        &'static str,
        &'static str,
        Option<&'static [(&'static str, &'static str)]>,
    );

    #[test]
    fn matching_table() {
        let cases: &[Case] = &[
            (
                "/products/{productId}",
                "/products/42",
                Some(&[("productId", "42")]),
            ),
            ("/products/{productId}", "/products/", None),
            ("/products/{productId}", "/products", None),
            ("/products/{productId}", "/products/42/reviews", None),
            (
                "/products/{id}/reviews",
                "/products/7/reviews",
                Some(&[("id", "7")]),
            ),
            ("/products/{id}/reviews", "/products/7/other", None),
            ("/a/*/c", "/a/b/c", Some(&[])),
            ("/a/*/c", "/a//c", None),
            (
                "/static/{rest=**}",
                "/static/css/site.css",
                Some(&[("rest", "css/site.css")]),
            ),
            ("/static/{rest=**}", "/static/", Some(&[("rest", "")])),
            ("/static/{rest=**}", "/static", Some(&[("rest", "")])),
            ("/static/**", "/static/a/b", Some(&[])),
            ("/users/{userId}", "/users/7", Some(&[("userId", "7")])),
            ("/users/{userId}", "/people/7", None),
            ("/", "/", Some(&[])),
            ("/", "/x", None),
            ("/{a}/{b}", "/x/y", Some(&[("a", "x"), ("b", "y")])),
        ];
        for (tpl, path, want) in cases {
            let t = Template::parse(tpl).unwrap();
            let got = t.captures(path);
            let want: Option<Vec<(String, String)>> = want.map(|w| {
                w.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            });
            assert_eq!(got, want, "{tpl} vs {path}");
            assert_eq!(t.matches(path), want.is_some(), "{tpl} vs {path} (matches)");
        }
    }

    #[test]
    fn parse_errors_table() {
        let cases: &[(&str, TemplateError)] = &[
            ("products/{id}", TemplateError::NotAbsolute),
            ("/a/**/b", TemplateError::RestNotLast),
            ("/a/{x=**}/b", TemplateError::RestNotLast),
            ("/a/{}", TemplateError::BadVariable("{}".into())),
            ("/a/{1x}", TemplateError::BadVariable("{1x}".into())),
            ("/a/{x=foo}", TemplateError::BadVariable("{x=foo}".into())),
            ("/a/{x}/{x}", TemplateError::DuplicateVariable("x".into())),
            ("/a/{x", TemplateError::Unclosed("{x".into())),
            ("/a/{x}y", TemplateError::MixedSegment("{x}y".into())),
            ("/a/x{y}", TemplateError::MixedSegment("x{y}".into())),
            ("/a/b*", TemplateError::MixedSegment("b*".into())),
        ];
        for (tpl, err) in cases {
            assert_eq!(Template::parse(tpl).unwrap_err(), *err, "{tpl}");
        }
    }
}
