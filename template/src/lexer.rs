//! Splits template text into tokens, on the calling thread, one token at a time as the parser
//! asks. Everything is read by character, so a multibyte character anywhere is just a character.

use crate::value::Value;

/// Go's space characters inside actions and for `{{-`/`-}}` trimming.
const SPACES: [char; 4] = [' ', '\t', '\r', '\n'];

fn is_space(c: char) -> bool {
    SPACES.contains(&c)
}

fn is_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The message for an action that the text ends inside (the existing wording, kept).
pub(crate) const UNCLOSED_ACTION: &str = "unclosed action: every {{ needs a matching }}";

/// The keywords of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    If,
    Else,
    End,
    Range,
    With,
    Break,
    Continue,
    Define,
    Template,
    Block,
}

impl Keyword {
    fn of(word: &str) -> Option<Self> {
        Some(match word {
            "if" => Keyword::If,
            "else" => Keyword::Else,
            "end" => Keyword::End,
            "range" => Keyword::Range,
            "with" => Keyword::With,
            "break" => Keyword::Break,
            "continue" => Keyword::Continue,
            "define" => Keyword::Define,
            "template" => Keyword::Template,
            "block" => Keyword::Block,
            _ => return None,
        })
    }

    /// The keyword as written.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Keyword::If => "if",
            Keyword::Else => "else",
            Keyword::End => "end",
            Keyword::Range => "range",
            Keyword::With => "with",
            Keyword::Break => "break",
            Keyword::Continue => "continue",
            Keyword::Define => "define",
            Keyword::Template => "template",
            Keyword::Block => "block",
        }
    }
}

/// What a token is.
#[derive(Debug, Clone)]
pub(crate) enum Tok {
    /// Text outside actions, already trimmed by `{{-`/`-}}`.
    Text(String),
    /// `{{` (or `{{- `).
    Open,
    /// `}}` (or ` -}}`).
    Close,
    /// A function name.
    Ident(String),
    Keyword(Keyword),
    /// `.name`, without the dot.
    Field(String),
    /// `.` alone.
    Dot,
    /// `$name` or `$`, with the dollar.
    Variable(String),
    /// A literal: string, number, character, `true`, `false`.
    Literal(Value),
    Nil,
    Pipe,
    LeftParen,
    RightParen,
    Declare,
    Assign,
    Comma,
    Eof,
}

/// A token and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    /// The line it starts on (1-based).
    pub(crate) line: usize,
    /// Whether space separated it from the token before (inside an action).
    pub(crate) spaced: bool,
}

/// A lexical error: the line and a message about the template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// The tokenizer's state.
pub(crate) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    in_action: bool,
    /// After `-}}`: the next text loses its leading spaces.
    trim_next_text: bool,
    done: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer over `src`.
    pub(crate) fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            line: 1,
            in_action: false,
            trim_next_text: false,
            done: false,
        }
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    /// Moves past `bytes` bytes, counting lines. Callers pass whole characters; should one
    /// not, the position moves on to the next character boundary (never into a character).
    fn advance(&mut self, bytes: usize) {
        let mut end = self.pos.saturating_add(bytes).min(self.src.len());
        while !self.src.is_char_boundary(end) {
            end += 1;
        }
        let taken = self.src.get(self.pos..end).unwrap_or_default();
        self.line += taken.matches('\n').count();
        self.pos = end;
    }

    fn error<T>(&self, line: usize, message: impl Into<String>) -> Result<T, LexError> {
        Err(LexError {
            line,
            message: message.into(),
        })
    }

    fn token(&self, tok: Tok, line: usize, spaced: bool) -> Result<Token, LexError> {
        Ok(Token { tok, line, spaced })
    }

    /// The next token; [`Tok::Eof`] at the end (and ever after).
    pub(crate) fn next_token(&mut self) -> Result<Token, LexError> {
        if self.in_action {
            self.inside_action()
        } else {
            self.outside_action()
        }
    }

    /// Whether `{{` at the current position opens with a trim marker (`{{- `).
    fn opens_with_trim(after_delim: &str) -> bool {
        let mut chars = after_delim.chars();
        chars.next() == Some('-') && chars.next().is_some_and(is_space)
    }

    fn outside_action(&mut self) -> Result<Token, LexError> {
        loop {
            if self.done || self.pos >= self.src.len() {
                self.done = true;
                return self.token(Tok::Eof, self.line, false);
            }
            let rest = self.rest();
            let line = self.line;
            let delim = rest.find("{{");
            let raw = &rest[..delim.unwrap_or(rest.len())];
            if !raw.is_empty() {
                let mut text = raw;
                if std::mem::take(&mut self.trim_next_text) {
                    text = text.trim_start_matches(SPACES);
                }
                if delim.is_some_and(|d| Self::opens_with_trim(&rest[d + 2..])) {
                    text = text.trim_end_matches(SPACES);
                }
                self.advance(raw.len());
                if !text.is_empty() {
                    return self.token(Tok::Text(text.to_string()), line, false);
                }
                continue;
            }
            // At `{{`.
            self.trim_next_text = false;
            let mut after = 2;
            if Self::opens_with_trim(&rest[2..]) {
                after += 2;
            }
            if rest[after..].starts_with("/*") {
                self.comment(after)?;
                continue;
            }
            self.advance(after);
            self.in_action = true;
            return self.token(Tok::Open, line, false);
        }
    }

    /// Skips `{{/* … */}}`; `after` is where `/*` starts.
    fn comment(&mut self, after: usize) -> Result<(), LexError> {
        let line = self.line;
        let rest = self.rest();
        let body = &rest[after + 2..];
        let Some(end) = body.find("*/") else {
            return self.error(line, "unclosed comment");
        };
        let tail = &body[end + 2..];
        let (close, trim) = if tail.starts_with("}}") {
            (2, false)
        } else if tail.chars().next().is_some_and(is_space) && tail[1..].starts_with("-}}") {
            (4, true)
        } else {
            return self.error(line, "comment ends before closing delimiter");
        };
        self.advance(after + 2 + end + 2 + close);
        self.trim_next_text = trim;
        Ok(())
    }

    fn inside_action(&mut self) -> Result<Token, LexError> {
        let start = self.pos;
        while self.peek_char().is_some_and(is_space) {
            self.advance(1);
        }
        let spaced = self.pos > start;
        let line = self.line;
        let rest = self.rest();
        if spaced && rest.starts_with("-}}") {
            self.advance(3);
            self.in_action = false;
            self.trim_next_text = true;
            return self.token(Tok::Close, line, spaced);
        }
        if rest.starts_with("}}") {
            self.advance(2);
            self.in_action = false;
            return self.token(Tok::Close, line, spaced);
        }
        let Some(c) = self.peek_char() else {
            return self.error(line, UNCLOSED_ACTION);
        };
        let simple = match c {
            '|' => Some(Tok::Pipe),
            '(' => Some(Tok::LeftParen),
            ')' => Some(Tok::RightParen),
            ',' => Some(Tok::Comma),
            '=' => Some(Tok::Assign),
            _ => None,
        };
        if let Some(tok) = simple {
            self.advance(1);
            return self.token(tok, line, spaced);
        }
        let tok = match c {
            ':' => {
                if self.peek_second() != Some('=') {
                    return self.error(line, "expected :=");
                }
                self.advance(2);
                Tok::Declare
            }
            '"' => Tok::Literal(Value::text(zeroize::Zeroizing::new(self.quoted()?))),
            '`' => Tok::Literal(Value::text(zeroize::Zeroizing::new(self.raw_quoted()?))),
            '\'' => Tok::Literal(Value::Int(self.character()?)),
            '$' => {
                self.advance(1);
                let name = self.word();
                self.ensure_terminator()?;
                Tok::Variable(format!("${name}"))
            }
            '.' if self.peek_second().is_some_and(|c| c.is_ascii_digit()) => self.number()?,
            '.' => {
                self.advance(1);
                let name = self.word();
                if name.is_empty() {
                    Tok::Dot
                } else {
                    self.ensure_terminator()?;
                    Tok::Field(name.to_string())
                }
            }
            '0'..='9' => self.number()?,
            '+' | '-'
                if self
                    .peek_second()
                    .is_some_and(|c| c.is_ascii_digit() || c == '.') =>
            {
                self.number()?
            }
            c if is_word(c) => {
                let word = self.word();
                self.ensure_terminator()?;
                match word {
                    "true" => Tok::Literal(Value::Bool(true)),
                    "false" => Tok::Literal(Value::Bool(false)),
                    "nil" => Tok::Nil,
                    _ => Keyword::of(word)
                        .map(Tok::Keyword)
                        .unwrap_or_else(|| Tok::Ident(word.to_string())),
                }
            }
            other => {
                return self.error(
                    line,
                    format!("unrecognized character in action: {:?}", other),
                );
            }
        };
        self.token(tok, line, spaced)
    }

    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|(_, c)| !is_word(*c))
            .map_or(rest.len(), |(i, _)| i);
        self.advance(len);
        &rest[..len]
    }

    /// After a name, Go wants a space, a delimiter, or punctuation.
    fn ensure_terminator(&self) -> Result<(), LexError> {
        let rest = self.rest();
        match rest.chars().next() {
            None => Ok(()),
            Some(c) if is_space(c) || ".,|:()=".contains(c) || rest.starts_with("}}") => Ok(()),
            Some(c) => self.error(self.line, format!("bad character {c:?}")),
        }
    }

    fn number(&mut self) -> Result<Tok, LexError> {
        let line = self.line;
        let rest = self.rest();
        let hex = {
            let unsigned = rest.trim_start_matches(['+', '-']);
            unsigned.starts_with("0x") || unsigned.starts_with("0X")
        };
        let mut len = 0;
        let mut previous = ' ';
        for (i, c) in rest.char_indices() {
            let exponent_sign = (c == '+' || c == '-')
                && if hex {
                    matches!(previous, 'p' | 'P')
                } else {
                    matches!(previous, 'e' | 'E')
                };
            if i == 0 && (c == '+' || c == '-') || exponent_sign || is_word(c) || c == '.' {
                len = i + c.len_utf8();
                previous = c;
            } else {
                break;
            }
        }
        let literal = &rest[..len];
        self.advance(len);
        match parse_number(literal) {
            Some(value) => Ok(Tok::Literal(value)),
            None => self.error(line, format!("bad number syntax: {literal:?}")),
        }
    }

    fn quoted(&mut self) -> Result<String, LexError> {
        let line = self.line;
        self.advance(1);
        let mut bytes = Vec::new();
        loop {
            let Some(c) = self.peek_char() else {
                return self.error(line, "unterminated quoted string");
            };
            match c {
                '"' => {
                    self.advance(1);
                    break;
                }
                '\n' => return self.error(line, "unterminated quoted string"),
                '\\' => {
                    self.advance(1);
                    self.escape(&mut bytes, '"')?;
                }
                c => {
                    bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    self.advance(c.len_utf8());
                }
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// One escape after a backslash, as Go's `strconv.Unquote` reads it.
    fn escape(&mut self, bytes: &mut Vec<u8>, quote: char) -> Result<(), LexError> {
        let line = self.line;
        let Some(c) = self.peek_char() else {
            return self.error(line, "unterminated quoted string");
        };
        self.advance(c.len_utf8());
        let simple = match c {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' => Some('\\'),
            c if c == quote => Some(c),
            _ => None,
        };
        if let Some(s) = simple {
            bytes.extend_from_slice(s.encode_utf8(&mut [0; 4]).as_bytes());
            return Ok(());
        }
        let (digits, radix) = match c {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            _ => return self.error(line, format!("invalid escape \\{c} in quoted string")),
        };
        let rest = self.rest();
        let taken: String = rest.chars().take(digits).collect();
        let code = if radix == 8 {
            format!("{c}{taken}")
        } else {
            taken.clone()
        };
        if taken.chars().count() != digits || !taken.chars().all(|d| d.is_digit(radix)) {
            return self.error(line, "invalid escape in quoted string");
        }
        self.advance(taken.len());
        let number = u32::from_str_radix(&code, radix).unwrap_or(u32::MAX);
        match c {
            'x' | '0'..='7' => match u8::try_from(number) {
                Ok(byte) => bytes.push(byte),
                Err(_) => return self.error(line, "octal escape value > 255"),
            },
            _ => match char::from_u32(number) {
                Some(ch) => bytes.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
                None => return self.error(line, "invalid Unicode escape in quoted string"),
            },
        }
        Ok(())
    }

    fn raw_quoted(&mut self) -> Result<String, LexError> {
        let line = self.line;
        self.advance(1);
        let rest = self.rest();
        let Some(end) = rest.find('`') else {
            return self.error(line, "unterminated raw quoted string");
        };
        // Go's strconv.Unquote drops carriage returns from raw strings.
        let text = rest[..end].replace('\r', "");
        self.advance(end + 1);
        Ok(text)
    }

    fn character(&mut self) -> Result<i64, LexError> {
        let line = self.line;
        self.advance(1);
        let mut bytes = Vec::new();
        match self.peek_char() {
            None | Some('\n') | Some('\'') => {
                return self.error(line, "malformed character constant");
            }
            Some('\\') => {
                self.advance(1);
                self.escape(&mut bytes, '\'')?;
            }
            Some(c) => {
                bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                self.advance(c.len_utf8());
            }
        }
        if self.peek_char() != Some('\'') {
            return self.error(line, "unterminated character constant");
        }
        self.advance(1);
        let value = match std::str::from_utf8(&bytes) {
            Ok(s) if s.chars().count() == 1 => s.chars().next().map_or(0, |c| c as i64),
            _ if bytes.len() == 1 => i64::from(bytes[0]),
            _ => return self.error(line, "malformed character constant"),
        };
        Ok(value)
    }
}

/// A number literal as Go's template parser reads it: an integer when it is one (decimal, `0x`,
/// `0o`, `0b`, leading-zero octal, with `_` separators), else a float.
fn parse_number(literal: &str) -> Option<Value> {
    let cleaned: String = literal.chars().filter(|c| *c != '_').collect();
    let (negative, unsigned) = match cleaned.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, cleaned.strip_prefix('+').unwrap_or(&cleaned)),
    };
    if unsigned.is_empty() || unsigned.starts_with(['+', '-']) {
        return None;
    }
    let lower = unsigned.to_ascii_lowercase();
    let radix_digits = if let Some(d) = lower.strip_prefix("0x") {
        Some((16, d))
    } else if let Some(d) = lower.strip_prefix("0o") {
        Some((8, d))
    } else if let Some(d) = lower.strip_prefix("0b") {
        Some((2, d))
    } else if lower.len() > 1 && lower.starts_with('0') && lower.chars().all(|c| c.is_ascii_digit())
    {
        Some((8, &lower[1..]))
    } else {
        None
    };
    if let Some((radix, digits)) = radix_digits {
        let magnitude = i64::from_str_radix(digits, radix).ok()?;
        return Some(Value::Int(if negative { -magnitude } else { magnitude }));
    }
    if lower.chars().all(|c| c.is_ascii_digit())
        && let Ok(i) = cleaned.parse::<i64>()
    {
        return Some(Value::Int(i));
    }
    // Rust would accept "inf" and "nan"; a template number always starts with a digit or a dot.
    if !lower
        .chars()
        .all(|c| c.is_ascii_digit() || ".e+-".contains(c))
    {
        return None;
    }
    cleaned.parse::<f64>().ok().map(Value::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(src: &str) -> Result<Vec<Tok>, LexError> {
        let mut lexer = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token()?;
            if matches!(token.tok, Tok::Eof) {
                return Ok(out);
            }
            out.push(token.tok);
        }
    }

    #[test]
    fn trims_and_comments() {
        let toks = tokens("a  {{- /* c */ -}}  b {{- .x -}} \n c").unwrap();
        let texts: Vec<String> = toks
            .iter()
            .filter_map(|t| match t {
                Tok::Text(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["a", "b", "c"]);
        assert!(matches!(tokens("{{/* x */ }}"), Err(e) if e.message.contains("comment ends")));
        assert!(matches!(tokens("{{/* x "), Err(e) if e.message.contains("unclosed comment")));
    }

    #[test]
    fn numbers_and_strings() {
        let cases = [
            ("{{ 42 }}", "42"),
            ("{{ -7 }}", "-7"),
            ("{{ 0x1F }}", "31"),
            ("{{ 0o17 }}", "15"),
            ("{{ 017 }}", "15"),
            ("{{ 1_000 }}", "1000"),
            ("{{ 1.5 }}", "1.5"),
            ("{{ 'a' }}", "97"),
        ];
        for (src, want) in cases {
            let toks = tokens(src).unwrap();
            let shown = match &toks[1] {
                Tok::Literal(Value::Int(i)) => i.to_string(),
                Tok::Literal(Value::Float(f)) => f.to_string(),
                other => format!("{other:?}"),
            };
            assert_eq!(shown, want, "{src}");
        }
        assert!(tokens("{{ 1x }}").is_err());
        assert!(tokens("{{ 1.2.3 }}").is_err());
        let toks = tokens(r#"{{ "a\tb\u00e9\x41\101" `r\n` }}"#).unwrap();
        match (&toks[1], &toks[2]) {
            (Tok::Literal(Value::Str(a)), Tok::Literal(Value::Str(b))) => {
                assert_eq!(a.as_str(), "a\tbéAA");
                assert_eq!(b.as_str(), "r\\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multibyte_characters_inside_actions_are_characters() {
        assert!(tokens("{{ .é }}").is_ok());
        assert!(tokens("{{ é }}").is_ok());
        assert!(tokens("{{ € }}").is_err());
        assert!(tokens("{{ .a€ }}").is_err());
        assert!(tokens("{{ \"€").is_err());
        assert!(tokens("{{ '€' }}").is_ok());
        assert!(tokens("{{€").is_err());
        assert!(tokens("{{-€ }}").is_err());
    }

    #[test]
    fn an_action_left_open_is_an_error() {
        for src in ["{{", "{{ .a", "{{- ", "{{ \"x\" ", "x {{ (", "{{ `raw"] {
            assert!(tokens(src).is_err(), "{src:?}");
        }
        let error = tokens("{{ .a ").unwrap_err();
        assert_eq!(error.message, UNCLOSED_ACTION);
    }
}
