//! Glob patterns for `directory.include` / `directory.exclude`, with Argo CD's semantics.
//!
//! Argo CD matches a pattern against the file's path relative to the Application's `path`, with
//! no path separator: `*` and `?` cross `/` (so `*.yaml` matches `a/b.yaml`). Supported:
//! `*`, `?`, `[abc]`, `[a-z]`, `[!abc]`, `{a,b}` (alternatives, which may contain patterns), and
//! `\` to escape the next character.

/// The longest pattern accepted, in characters. Argo CD's documented patterns are a few dozen
/// characters; a list of a few dozen file names in braces fits. Matching costs at most
/// (pattern length × path length) steps per file, so this bounds the work an Application can
/// ask for per file.
pub const MAX_PATTERN_CHARS: usize = 1024;

/// The deepest brace nesting accepted (the parser recurses once per level).
pub const MAX_BRACE_DEPTH: usize = 16;

/// A compiled pattern: a small automaton run over the path (braces are alternatives inside it,
/// never expanded into every combination, so `{a,b}` forty times stays forty small branches
/// instead of 2^40 patterns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    program: Vec<Instruction>,
}

/// One parsed element of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    /// One character that must match.
    One(CharTest),
    /// `*`: any sequence, `/` included.
    AnyMany,
    /// `{a,b}`: one of the alternatives.
    Alternatives(Vec<Vec<Node>>),
}

/// What one character of the path must be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CharTest {
    Literal(char),
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl CharTest {
    fn accepts(&self, c: char) -> bool {
        match self {
            CharTest::Literal(literal) => *literal == c,
            CharTest::Any => true,
            CharTest::Class { negated, ranges } => {
                ranges.iter().any(|(low, high)| (*low..=*high).contains(&c)) != *negated
            }
        }
    }
}

/// An instruction of the matching automaton (Thompson's construction).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Instruction {
    /// Consume one character that passes the test, then go on with the next instruction.
    Char(CharTest),
    /// Continue at both targets.
    Split(usize, usize),
    /// Continue at the target.
    Jump(usize),
    /// The whole path matched (when the path is consumed).
    Match,
}

/// Why a pattern is not a glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GlobError(String);

impl Glob {
    /// Compiles `pattern`; refuses one longer than `MAX_PATTERN_CHARS` (1024) or with braces
    /// nested deeper than `MAX_BRACE_DEPTH` (16).
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let chars: Vec<char> = pattern.chars().collect();
        if chars.len() > MAX_PATTERN_CHARS {
            return Err(GlobError(format!(
                "the pattern has {} characters; at most {MAX_PATTERN_CHARS} are accepted",
                chars.len()
            )));
        }
        let mut parser = Parser {
            chars: &chars,
            index: 0,
        };
        let nodes = parser.sequence(0)?;
        let mut program = Vec::new();
        compile(&nodes, &mut program);
        program.push(Instruction::Match);
        Ok(Glob { program })
    }

    /// Whether `path` (relative, `/`-separated) matches: every automaton state is followed at
    /// once, so the work is at most (instructions × characters), whatever the pattern.
    pub fn matches(&self, path: &str) -> bool {
        let size = self.program.len();
        let mut current = States::new(size);
        let mut next = States::new(size);
        current.add(&self.program, 0);
        for c in path.chars() {
            if current.list.is_empty() {
                return false;
            }
            next.clear();
            for &at in &current.list {
                if let Instruction::Char(test) = &self.program[at]
                    && test.accepts(c)
                {
                    next.add(&self.program, at + 1);
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        current
            .list
            .iter()
            .any(|&at| self.program[at] == Instruction::Match)
    }
}

/// A set of automaton positions waiting for the next character (each at most once).
struct States {
    list: Vec<usize>,
    /// `seen[at]` is the step `at` was last added in (`0`: never), so a position is listed once.
    seen: Vec<usize>,
    /// `visited[at]` is the step a `Split` or `Jump` was last followed in: what it reaches is
    /// already listed, so a step follows each at most once whatever the pattern's shape.
    visited: Vec<usize>,
    step: usize,
}

impl States {
    fn new(size: usize) -> States {
        States {
            list: Vec::with_capacity(size),
            seen: vec![0; size],
            visited: vec![0; size],
            step: 1,
        }
    }

    /// Starts the next step with no positions.
    fn clear(&mut self) {
        self.list.clear();
        self.step += 1;
    }

    /// Adds `start` and every position reachable from it without consuming a character.
    fn add(&mut self, program: &[Instruction], start: usize) {
        let mut pending = vec![start];
        while let Some(at) = pending.pop() {
            match &program[at] {
                Instruction::Split(first, second) => {
                    if self.visited[at] != self.step {
                        self.visited[at] = self.step;
                        pending.push(*second);
                        pending.push(*first);
                    }
                }
                Instruction::Jump(target) => {
                    if self.visited[at] != self.step {
                        self.visited[at] = self.step;
                        pending.push(*target);
                    }
                }
                Instruction::Char(_) | Instruction::Match => {
                    if self.seen[at] != self.step {
                        self.seen[at] = self.step;
                        self.list.push(at);
                    }
                }
            }
        }
    }
}

/// Appends the instructions for `nodes` to `program`.
fn compile(nodes: &[Node], program: &mut Vec<Instruction>) {
    let mut previous_star = false;
    for node in nodes {
        match node {
            Node::One(test) => program.push(Instruction::Char(test.clone())),
            // `**` is the same as `*` here: both cross `/`.
            Node::AnyMany if previous_star => {}
            Node::AnyMany => {
                let split = program.len();
                program.push(Instruction::Split(split + 1, split + 3));
                program.push(Instruction::Char(CharTest::Any));
                program.push(Instruction::Jump(split));
            }
            Node::Alternatives(alternatives) => {
                let mut jumps_to_end = Vec::new();
                let last = alternatives.len().saturating_sub(1);
                for (index, alternative) in alternatives.iter().enumerate() {
                    if index == last {
                        compile(alternative, program);
                    } else {
                        let split = program.len();
                        program.push(Instruction::Split(split + 1, 0));
                        compile(alternative, program);
                        jumps_to_end.push(program.len());
                        program.push(Instruction::Jump(0));
                        let next = program.len();
                        program[split] = Instruction::Split(split + 1, next);
                    }
                }
                let end = program.len();
                for jump in jumps_to_end {
                    program[jump] = Instruction::Jump(end);
                }
            }
        }
        previous_star = *node == Node::AnyMany;
    }
}

/// A recursive-descent parser over the pattern's characters.
struct Parser<'a> {
    chars: &'a [char],
    index: usize,
}

impl Parser<'_> {
    /// A sequence up to the end, or (inside braces, `depth > 0`) up to a top-level `,` or `}`,
    /// which is left for the caller.
    fn sequence(&mut self, depth: usize) -> Result<Vec<Node>, GlobError> {
        let mut nodes = Vec::new();
        while let Some(&c) = self.chars.get(self.index) {
            match c {
                ',' | '}' if depth > 0 => return Ok(nodes),
                '\\' => {
                    let escaped = self
                        .chars
                        .get(self.index + 1)
                        .ok_or_else(|| GlobError("trailing `\\`".into()))?;
                    nodes.push(Node::One(CharTest::Literal(*escaped)));
                    self.index += 2;
                }
                '*' => {
                    nodes.push(Node::AnyMany);
                    self.index += 1;
                }
                '?' => {
                    nodes.push(Node::One(CharTest::Any));
                    self.index += 1;
                }
                '[' => nodes.push(Node::One(self.class()?)),
                '{' => nodes.push(self.alternatives(depth + 1)?),
                c => {
                    nodes.push(Node::One(CharTest::Literal(c)));
                    self.index += 1;
                }
            }
        }
        if depth > 0 {
            return Err(GlobError("unclosed `{`".into()));
        }
        Ok(nodes)
    }

    /// `{a,b,...}` at the cursor; `depth` is its nesting level.
    fn alternatives(&mut self, depth: usize) -> Result<Node, GlobError> {
        if depth > MAX_BRACE_DEPTH {
            return Err(GlobError(format!(
                "braces are nested deeper than {MAX_BRACE_DEPTH} levels"
            )));
        }
        self.index += 1;
        let mut alternatives = Vec::new();
        loop {
            alternatives.push(self.sequence(depth)?);
            match self.chars.get(self.index) {
                Some(',') => self.index += 1,
                Some('}') => {
                    self.index += 1;
                    return Ok(Node::Alternatives(alternatives));
                }
                _ => return Err(GlobError("unclosed `{`".into())),
            }
        }
    }

    /// `[abc]`, `[a-z]`, `[!abc]` / `[^abc]` at the cursor; a `]` first is a member.
    fn class(&mut self) -> Result<CharTest, GlobError> {
        let chars = self.chars;
        let mut cursor = self.index + 1;
        let negated = matches!(chars.get(cursor), Some('!') | Some('^'));
        if negated {
            cursor += 1;
        }
        let mut ranges = Vec::new();
        loop {
            let Some(&c) = chars.get(cursor) else {
                return Err(GlobError("unclosed `[`".into()));
            };
            if c == ']' && !ranges.is_empty() {
                break;
            }
            let c = if c == '\\' {
                cursor += 1;
                *chars
                    .get(cursor)
                    .ok_or_else(|| GlobError("trailing `\\`".into()))?
            } else {
                c
            };
            if chars.get(cursor + 1) == Some(&'-')
                && let Some(&end) = chars.get(cursor + 2)
                && end != ']'
            {
                if end < c {
                    return Err(GlobError(format!("range {c}-{end} is reversed")));
                }
                ranges.push((c, end));
                cursor += 3;
            } else {
                ranges.push((c, c));
                cursor += 1;
            }
        }
        self.index = cursor + 1;
        Ok(CharTest::Class { negated, ranges })
    }
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
    fn forty_brace_groups_are_matched_without_expansion() {
        // Expanded, this is 2^40 patterns; compiled, about 240 instructions.
        let pattern = "{a,b}".repeat(40);
        let started = std::time::Instant::now();
        let glob = Glob::new(&pattern).unwrap();
        assert!(glob.program.len() < 400, "{}", glob.program.len());
        assert!(glob.matches(&"ab".repeat(20)));
        assert!(!glob.matches(&"ab".repeat(19)));
        assert!(!glob.matches(&format!("{}c", "a".repeat(39))));
        // Alternatives with stars keep many states alive at once: still bounded.
        let starred = "{*a,*b}".repeat(40);
        let glob = Glob::new(&starred).unwrap();
        let path = "ab/".repeat(100);
        assert!(!glob.matches(&path));
        assert!(glob.matches(&"ab".repeat(40)));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn patterns_over_the_bounds_are_refused() {
        let long = "a".repeat(MAX_PATTERN_CHARS + 1);
        let error = Glob::new(&long).unwrap_err();
        assert!(error.to_string().contains("at most 1024"), "{error}");
        assert!(Glob::new(&"a".repeat(MAX_PATTERN_CHARS)).is_ok());
        let deep = format!(
            "{}x{}",
            "{a,".repeat(MAX_BRACE_DEPTH + 1),
            "}".repeat(MAX_BRACE_DEPTH + 1)
        );
        let error = Glob::new(&deep).unwrap_err();
        assert!(error.to_string().contains("nested deeper"), "{error}");
        let fits = format!(
            "{}x{}",
            "{a,".repeat(MAX_BRACE_DEPTH),
            "}".repeat(MAX_BRACE_DEPTH)
        );
        // `{a,{a,...{a,x}...}}`: `a` or `x`.
        assert!(matches(&fits, "a"));
        assert!(matches(&fits, "x"));
        assert!(!matches(&fits, "ax"));
    }

    #[test]
    fn literal_braces_commas_and_empty_alternatives() {
        assert!(matches("a,b", "a,b"));
        assert!(matches("a}b", "a}b"));
        assert!(matches(r"\{a\}", "{a}"));
        assert!(matches("x{,.bak}", "x"));
        assert!(matches("x{,.bak}", "x.bak"));
        assert!(matches("[{,}]", ","));
        assert!(matches("{[,]x,y}", ",x"));
        assert!(matches("{}", ""));
        assert!(matches("[]a]", "]"));
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let pattern = "*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(200);
        assert!(!matches(pattern, &text));
    }
}
