//! YAML paths and where they are in the file.
//!
//! Semantic checks (an unknown cluster, a bad regex) run on the parsed model, which has no
//! positions. They report a [`YamlPath`] such as `listeners[0].routes[2].to`; this module
//! walks the YAML event stream once, records where every path starts, and attaches the
//! line and column to each problem.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::granit_parser::{Event, Parser};

use super::Problem;

/// One step of a path into a YAML document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path from the document root, such as `listeners[0].routes[2].to`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    /// The root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path with a key appended.
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_owned()));
        Self(v)
    }

    /// This path with an index appended.
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Self(v)
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if k.contains(['.', '[', ']', ' ', '"']) || k.is_empty() => {
                    write!(f, "[{k:?}]")?
                }
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
            }
        }
        Ok(())
    }
}

/// A problem found on the model, waiting for its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Where in the document.
    pub path: YamlPath,
    /// What is wrong.
    pub message: String,
}

impl Pending {
    /// A problem at `path`.
    pub fn new(path: YamlPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}

/// Turns pending problems into problems with lines, looking each path up in `text`.
/// A path that is not in the text (a default value) gets the line of its nearest
/// ancestor that is.
pub fn locate_all(text: &str, pending: Vec<Pending>) -> Vec<Problem> {
    let index = index(text);
    let mut problems: Vec<Problem> = pending
        .into_iter()
        .map(|p| {
            let line = (0..=p.path.0.len())
                .rev()
                .find_map(|n| index.get(&p.path.0[..n]).copied());
            Problem {
                place: p.path.to_string(),
                line,
                message: p.message,
            }
        })
        .collect();
    // In file order, as a reader goes through the file.
    problems.sort_by_key(|p| p.line.unwrap_or((usize::MAX, 0)));
    problems
}

enum Frame {
    Map { key: Option<String> },
    Seq { next: usize },
}

/// Maps every path in the document to the 1-based (line, column) where it starts. For
/// mapping entries this is the key's position, which is where a reader looks.
pub fn index(text: &str) -> HashMap<Vec<Seg>, (usize, usize)> {
    let mut out = HashMap::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut path: Vec<Seg> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let pos = (span.start.line(), span.start.col() + 1);
        let (is_node, opens) = match &event {
            Event::Scalar(..) | Event::Alias(..) => (true, false),
            Event::MappingStart(..) | Event::SequenceStart(..) => (true, true),
            Event::MappingEnd | Event::SequenceEnd => {
                frames.pop();
                path.pop();
                finish_value(&mut frames);
                continue;
            }
            _ => (false, false),
        };
        if !is_node {
            continue;
        }
        // A scalar in key position of a mapping is a key, not a node of its own.
        if let Some(Frame::Map { key }) = frames.last_mut()
            && key.is_none()
        {
            let k = match &event {
                Event::Scalar(v, ..) => v.to_string(),
                _ => "?".to_owned(),
            };
            let mut p = path.clone();
            p.push(Seg::Key(k.clone()));
            out.entry(p).or_insert(pos);
            *key = Some(k);
            // A complex key is not descended into; it is rare in configuration files.
            continue;
        }
        let seg = match frames.last() {
            Some(Frame::Map { key: Some(k) }) => Some(Seg::Key(k.clone())),
            Some(Frame::Seq { next }) => Some(Seg::Index(*next)),
            _ => None,
        };
        let mut p = path.clone();
        if let Some(s) = &seg {
            p.push(s.clone());
        }
        out.entry(p).or_insert(pos);
        if opens {
            // The root opens a frame without a path step; its end pops an empty path.
            if let Some(s) = seg {
                path.push(s);
            }
            frames.push(match event {
                Event::MappingStart(..) => Frame::Map { key: None },
                _ => Frame::Seq { next: 0 },
            });
        } else {
            finish_value(&mut frames);
        }
    }
    out
}

fn finish_value(frames: &mut [Frame]) {
    match frames.last_mut() {
        Some(Frame::Map { key }) => *key = None,
        Some(Frame::Seq { next }) => *next += 1,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render() {
        let p = YamlPath::root()
            .key("listeners")
            .index(0)
            .key("routes")
            .index(2)
            .key("to");
        assert_eq!(p.to_string(), "listeners[0].routes[2].to");
        let p = YamlPath::root().key("clusters").key("a.b");
        assert_eq!(p.to_string(), r#"clusters["a.b"]"#);
    }

    #[test]
    fn index_finds_lines() {
        let text = "listeners:\n  - name: edge\n    routes:\n      - match: { path: /a }\n        to: cart\n      - to: user\nclusters:\n  cart: { endpoints: [1.2.3.4:80] }\n";
        let idx = index(text);
        let at = |p: YamlPath| idx.get(&p.0).copied();
        let l0 = YamlPath::root().key("listeners").index(0);
        assert_eq!(at(l0.key("name")), Some((2, 5)));
        assert_eq!(at(l0.key("routes").index(0).key("to")), Some((5, 9)));
        assert_eq!(at(l0.key("routes").index(1).key("to")), Some((6, 9)));
        assert_eq!(
            at(l0.key("routes").index(0).key("match").key("path")),
            Some((4, 18))
        );
        assert_eq!(
            at(YamlPath::root()
                .key("clusters")
                .key("cart")
                .key("endpoints")
                .index(0)),
            Some((8, 23))
        );
    }

    #[test]
    fn missing_paths_fall_back_to_the_parent() {
        let text = "listeners:\n  - name: edge\n";
        let path = YamlPath::root().key("listeners").index(0).key("address");
        let problems = locate_all(text, vec![Pending::new(path, "missing")]);
        assert_eq!(problems[0].line, Some((2, 5)));
        assert_eq!(problems[0].place, "listeners[0].address");
    }
}
