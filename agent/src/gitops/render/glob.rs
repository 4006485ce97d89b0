//! Glob patterns for `directory.include` / `directory.exclude`, with Argo CD's semantics.
//!
//! Argo CD matches a pattern against the file's path relative to the Application's `path`, with
//! no path separator: `*` and `?` cross `/` (so `*.yaml` matches `a/b.yaml`). Supported:
//! `*`, `?`, `[abc]`, `[a-z]`, `[!abc]`, `{a,b}` (alternatives, which may contain patterns), and
//! `\` to escape the next character.

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    alternatives: Vec<Vec<Token>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyMany,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Why a pattern is not a glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GlobError(String);

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let expanded = expand_braces(pattern)?;
        let alternatives = expanded
            .iter()
            .map(|alternative| tokenize(alternative))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Glob { alternatives })
    }

    /// Whether `path` (relative, `/`-separated) matches.
    pub fn matches(&self, path: &str) -> bool {
        let text: Vec<char> = path.chars().collect();
        self.alternatives
            .iter()
            .any(|tokens| match_tokens(tokens, &text))
    }
}

/// `{a,b}c` → [`ac`, `bc`], nested and repeated groups included.
fn expand_braces(pattern: &str) -> Result<Vec<String>, GlobError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut depth = 0usize;
    let mut open = None;
    let mut index = 0;
    while index < chars.len() {
        match chars[index] {
            '\\' => index += 1,
            '[' => {
                // Braces inside a class are literal.
                while index < chars.len() && chars[index] != ']' {
                    index += 1;
                }
            }
            '{' => {
                if depth == 0 {
                    open = Some(index);
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let start = open.unwrap_or(0);
                    let head: String = chars[..start].iter().collect();
                    let tail: String = chars[index + 1..].iter().collect();
                    let mut result = Vec::new();
                    for choice in split_top_level(&chars[start + 1..index]) {
                        for expanded in expand_braces(&format!("{head}{choice}{tail}"))? {
                            result.push(expanded);
                        }
                    }
                    return Ok(result);
                }
            }
            _ => {}
        }
        index += 1;
    }
    if depth > 0 {
        return Err(GlobError(format!("unclosed `{{` in {pattern:?}")));
    }
    Ok(vec![pattern.to_string()])
}

fn split_top_level(chars: &[char]) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0usize;
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        match c {
            '\\' if index + 1 < chars.len() => {
                if let Some(part) = parts.last_mut() {
                    part.push(c);
                    part.push(chars[index + 1]);
                }
                index += 2;
                continue;
            }
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(String::new());
                index += 1;
                continue;
            }
            _ => {}
        }
        if let Some(part) = parts.last_mut() {
            part.push(c);
        }
        index += 1;
    }
    parts
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, GlobError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        match chars[index] {
            '\\' => {
                let escaped = chars
                    .get(index + 1)
                    .ok_or_else(|| GlobError(format!("trailing `\\` in {pattern:?}")))?;
                tokens.push(Token::Literal(*escaped));
                index += 2;
            }
            '*' => {
                // `**` is the same as `*` here: both cross `/`.
                if tokens.last() != Some(&Token::AnyMany) {
                    tokens.push(Token::AnyMany);
                }
                index += 1;
            }
            '?' => {
                tokens.push(Token::AnyOne);
                index += 1;
            }
            '[' => {
                let mut cursor = index + 1;
                let negated = matches!(chars.get(cursor), Some('!') | Some('^'));
                if negated {
                    cursor += 1;
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                while cursor < chars.len() {
                    let c = chars[cursor];
                    if c == ']' && !ranges.is_empty() {
                        closed = true;
                        break;
                    }
                    let c = if c == '\\' {
                        cursor += 1;
                        *chars
                            .get(cursor)
                            .ok_or_else(|| GlobError(format!("trailing `\\` in {pattern:?}")))?
                    } else {
                        c
                    };
                    if chars.get(cursor + 1) == Some(&'-')
                        && let Some(&end) = chars.get(cursor + 2)
                        && end != ']'
                    {
                        if end < c {
                            return Err(GlobError(format!(
                                "range {c}-{end} is reversed in {pattern:?}"
                            )));
                        }
                        ranges.push((c, end));
                        cursor += 3;
                    } else {
                        ranges.push((c, c));
                        cursor += 1;
                    }
                }
                if !closed {
                    return Err(GlobError(format!("unclosed `[` in {pattern:?}")));
                }
                tokens.push(Token::Class { negated, ranges });
                index = cursor + 1;
            }
            c => {
                tokens.push(Token::Literal(c));
                index += 1;
            }
        }
    }
    Ok(tokens)
}

/// Iterative wildcard matching with backtracking to the last `*` (linear for practical input).
fn match_tokens(tokens: &[Token], text: &[char]) -> bool {
    let (mut t, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        let step = match tokens.get(t) {
            Some(Token::AnyMany) => {
                star = Some((t, s));
                t += 1;
                continue;
            }
            Some(Token::AnyOne) => true,
            Some(Token::Literal(c)) => *c == text[s],
            Some(Token::Class { negated, ranges }) => {
                let inside = ranges
                    .iter()
                    .any(|(low, high)| (*low..=*high).contains(&text[s]));
                inside != *negated
            }
            None => false,
        };
        if step {
            t += 1;
            s += 1;
        } else if let Some((star_t, star_s)) = star {
            t = star_t + 1;
            s = star_s + 1;
            star = Some((star_t, star_s + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|token| *token == Token::AnyMany)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        Glob::new(pattern).unwrap().matches(path)
    }

    #[test]
    fn star_and_question_mark_cross_directories_as_in_argo_cd() {
        assert!(matches("*.yaml", "deploy.yaml"));
        assert!(matches("*.yaml", "sub/deploy.yaml"));
        assert!(!matches("*.yaml", "deploy.json"));
        assert!(matches("some-directory/*", "some-directory/a/b.yaml"));
        assert!(!matches("some-directory/*", "other/a.yaml"));
        assert!(matches("a?c.yaml", "abc.yaml"));
        assert!(!matches("a?c.yaml", "ac.yaml"));
        assert!(matches("**/*.yml", "x/y/z.yml"));
    }

    #[test]
    fn braces_give_alternatives_like_argo_cd_docs() {
        let pattern = "{config.json,env-usw2/*}";
        assert!(matches(pattern, "config.json"));
        assert!(matches(pattern, "env-usw2/a.yaml"));
        assert!(!matches(pattern, "env-use1/a.yaml"));
        assert!(matches("{a,b{c,d}}.yaml", "bd.yaml"));
        assert!(!matches("{a,b{c,d}}.yaml", "b.yaml"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(matches("v[0-9].yaml", "v7.yaml"));
        assert!(!matches("v[0-9].yaml", "vx.yaml"));
        assert!(matches("v[!0-9].yaml", "vx.yaml"));
        assert!(matches(r"literal\*.yaml", "literal*.yaml"));
        assert!(!matches(r"literal\*.yaml", "literalx.yaml"));
    }

    #[test]
    fn malformed_patterns_are_errors() {
        assert!(Glob::new("{a,b").is_err());
        assert!(Glob::new("[abc").is_err());
        assert!(Glob::new("[z-a]").is_err());
        assert!(Glob::new("trailing\\").is_err());
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let pattern = "*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(200);
        assert!(!matches(pattern, &text));
    }
}
