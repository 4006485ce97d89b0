//! Builds the tree of a template from the lexer's tokens. Bounded: the text's size, the number
//! of nodes, and the nesting of control structures and parenthesised pipelines are limited, so
//! neither the parser's recursion nor the tree can grow without bound.

use std::collections::{HashMap, VecDeque};

use crate::functions::{self, Function};
use crate::lexer::{Keyword, LexError, Lexer, Tok, Token};
use crate::value::Value;

/// The largest template text accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 1024 * 1024;
/// The deepest nesting of control structures (`if`, `range`, `with`) and parenthesised
/// pipelines.
pub const MAX_NESTING: usize = 64;
/// The most nodes (text, actions, commands, operands) one template may have.
pub const MAX_NODES: usize = 100_000;
/// The most variables in scope at once (lookups scan them, so this bounds their cost).
pub const MAX_VARIABLES: usize = 1000;

/// A node of the template's tree.
#[derive(Debug)]
pub(crate) enum Node {
    Text(String),
    /// `{{ pipeline }}`: printed unless it declares or assigns variables.
    Action(Pipeline),
    /// `if` (`with: false`) or `with`, with its `else if`/`else with` arms in order.
    Conditional {
        with: bool,
        arms: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Option<Vec<Node>>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Option<Vec<Node>>,
    },
    Break,
    Continue,
}

/// `$a, $b := cmd | cmd | …`.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) declarations: Vec<String>,
    /// `=` rather than `:=`.
    pub(crate) assign: bool,
    pub(crate) commands: Vec<Command>,
}

/// One stage of a pipeline: a function and its arguments, or a single operand.
#[derive(Debug)]
pub(crate) enum Command {
    Call(Function, Vec<Operand>),
    Operand(Operand),
}

/// An argument.
#[derive(Debug)]
pub(crate) enum Operand {
    Dot,
    /// `.a.b`: fields of dot.
    Field(Vec<String>),
    /// `$x.a.b`.
    Variable(String, Vec<String>),
    /// `(pipeline).a.b`.
    Pipeline(Box<Pipeline>, Vec<String>),
    /// A function named as an argument: called with no arguments.
    Function(Function),
    Literal(Value),
    Nil,
}

/// A parse error: line and message (about the template text only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

impl From<LexError> for ParseError {
    fn from(error: LexError) -> Self {
        ParseError {
            line: error.line,
            message: error.message,
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// How a list of nodes ended.
enum Stop {
    Eof,
    End,
    /// `{{else`: the rest of that action is still to be read.
    Else,
}

/// The context a pipeline is parsed in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Action,
    If,
    With,
    Range,
    Parenthesised,
}

impl Context {
    fn name(self) -> &'static str {
        match self {
            Context::Action => "command",
            Context::If => "if",
            Context::With => "with",
            Context::Range => "range",
            Context::Parenthesised => "parenthesized pipeline",
        }
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    ahead: VecDeque<Token>,
    /// The variables in scope, innermost last (Go checks use at parse time).
    variables: Vec<String>,
    /// How many variables of each name are in scope, so checking one is not a scan.
    declared: HashMap<String, usize>,
    range_depth: usize,
    nodes: usize,
    last_line: usize,
}

/// Parses `text` into its top-level list of nodes.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, ParseError> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(ParseError {
            line: 1,
            message: format!("template exceeds {MAX_TEMPLATE_BYTES} bytes"),
        });
    }
    let mut parser = Parser {
        lexer: Lexer::new(text),
        ahead: VecDeque::new(),
        variables: vec!["$".to_string()],
        declared: HashMap::from([("$".to_string(), 1)]),
        range_depth: 0,
        nodes: 0,
        last_line: 1,
    };
    let (list, stop) = parser.list(0)?;
    match stop {
        Stop::Eof => Ok(list),
        Stop::End => parser.fail("unexpected {{end}}"),
        Stop::Else => parser.fail("unexpected {{else}}"),
    }
}

impl Parser<'_> {
    fn fill(&mut self, count: usize) -> Result<(), ParseError> {
        while self.ahead.len() < count {
            let token = self.lexer.next_token()?;
            self.ahead.push_back(token);
        }
        Ok(())
    }

    fn peek(&mut self) -> Result<&Token, ParseError> {
        self.peek_at(0)
    }

    fn peek_at(&mut self, index: usize) -> Result<&Token, ParseError> {
        self.fill(index + 1)?;
        self.ahead.get(index).ok_or_else(|| ParseError {
            line: self.last_line,
            message: "unexpected end of tokens".to_string(),
        })
    }

    fn next(&mut self) -> Result<Token, ParseError> {
        self.fill(1)?;
        let token = self.ahead.pop_front().ok_or_else(|| ParseError {
            line: self.last_line,
            message: "unexpected end of tokens".to_string(),
        })?;
        self.last_line = token.line;
        Ok(token)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.last_line,
            message: message.into(),
        })
    }

    fn count_node(&mut self) -> Result<(), ParseError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return self.fail(format!("template has more than {MAX_NODES} nodes"));
        }
        Ok(())
    }

    fn nest(&self, depth: usize) -> Result<usize, ParseError> {
        let depth = depth + 1;
        if depth > MAX_NESTING {
            return self.fail(format!(
                "control structures and parentheses nest deeper than {MAX_NESTING} levels"
            ));
        }
        Ok(depth)
    }

    fn declare(&mut self, name: &str) -> Result<(), ParseError> {
        if self.variables.len() >= MAX_VARIABLES {
            return self.fail(format!("more than {MAX_VARIABLES} variables in scope"));
        }
        self.variables.push(name.to_string());
        *self.declared.entry(name.to_string()).or_default() += 1;
        Ok(())
    }

    fn is_declared(&self, name: &str) -> bool {
        self.declared.get(name).is_some_and(|count| *count > 0)
    }

    /// Ends the scope that began when `scope` variables were declared.
    fn close_scope(&mut self, scope: usize) {
        for name in self.variables.drain(scope..) {
            if let Some(count) = self.declared.get_mut(&name) {
                *count = count.saturating_sub(1);
            }
        }
    }

    fn expect_close(&mut self, context: &str) -> Result<(), ParseError> {
        let token = self.next()?;
        match token.tok {
            Tok::Close => Ok(()),
            other => self.fail(format!("unexpected {} in {context}", describe(&other))),
        }
    }

    /// Nodes up to `{{end}}`, `{{else`, or the end of the text.
    fn list(&mut self, depth: usize) -> Result<(Vec<Node>, Stop), ParseError> {
        let mut nodes = Vec::new();
        loop {
            let token = self.next()?;
            match token.tok {
                Tok::Eof => return Ok((nodes, Stop::Eof)),
                Tok::Text(text) => {
                    self.count_node()?;
                    nodes.push(Node::Text(text));
                }
                Tok::Open => match self.peek()?.tok {
                    Tok::Keyword(Keyword::End) => {
                        self.next()?;
                        self.expect_close("end")?;
                        return Ok((nodes, Stop::End));
                    }
                    Tok::Keyword(Keyword::Else) => {
                        self.next()?;
                        return Ok((nodes, Stop::Else));
                    }
                    _ => {
                        self.count_node()?;
                        nodes.push(self.action(depth)?);
                    }
                },
                other => return self.fail(format!("unexpected {}", describe(&other))),
            }
        }
    }

    /// The rest of an action after `{{`.
    fn action(&mut self, depth: usize) -> Result<Node, ParseError> {
        let keyword = match self.peek()?.tok {
            Tok::Keyword(keyword) => Some(keyword),
            _ => None,
        };
        match keyword {
            Some(Keyword::If) => {
                self.next()?;
                self.conditional(false, depth)
            }
            Some(Keyword::With) => {
                self.next()?;
                self.conditional(true, depth)
            }
            Some(Keyword::Range) => {
                self.next()?;
                self.range(depth)
            }
            Some(keyword @ (Keyword::Break | Keyword::Continue)) => {
                self.next()?;
                if self.range_depth == 0 {
                    return self.fail(format!("{{{{{}}}}} outside {{{{range}}}}", keyword.word()));
                }
                self.expect_close(keyword.word())?;
                Ok(if keyword == Keyword::Break {
                    Node::Break
                } else {
                    Node::Continue
                })
            }
            Some(keyword @ (Keyword::Define | Keyword::Template | Keyword::Block)) => {
                self.fail(format!(
                    "the {:?} action is not supported in Secret templates",
                    keyword.word()
                ))
            }
            Some(keyword) => self.fail(format!("unexpected {:?}", keyword.word())),
            None => Ok(Node::Action(self.pipeline(Context::Action, depth)?)),
        }
    }

    /// `if`/`with` after the keyword, with `else if`/`else with` chains read iteratively.
    fn conditional(&mut self, with: bool, depth: usize) -> Result<Node, ParseError> {
        let depth = self.nest(depth)?;
        let scope = self.variables.len();
        let context = if with { Context::With } else { Context::If };
        let mut arms = Vec::new();
        let otherwise = loop {
            let pipe = self.pipeline(context, depth)?;
            let (body, stop) = self.list(depth)?;
            arms.push((pipe, body));
            match stop {
                Stop::Eof => {
                    return self.fail(format!(
                        "unexpected EOF: {{{{{}}}}} needs {{{{end}}}}",
                        context.name()
                    ));
                }
                Stop::End => break None,
                Stop::Else => {
                    let chained = if with { Keyword::With } else { Keyword::If };
                    if matches!(self.peek()?.tok, Tok::Keyword(k) if k == chained) {
                        self.next()?;
                        self.count_node()?;
                        continue;
                    }
                    self.expect_close("else")?;
                    let (otherwise, stop) = self.list(depth)?;
                    match stop {
                        Stop::End => break Some(otherwise),
                        Stop::Else => return self.fail("expected {{end}}; found {{else}}"),
                        Stop::Eof => {
                            return self.fail(format!(
                                "unexpected EOF: {{{{{}}}}} needs {{{{end}}}}",
                                context.name()
                            ));
                        }
                    }
                }
            }
        };
        self.close_scope(scope);
        Ok(Node::Conditional {
            with,
            arms,
            otherwise,
        })
    }

    fn range(&mut self, depth: usize) -> Result<Node, ParseError> {
        let depth = self.nest(depth)?;
        let scope = self.variables.len();
        let pipe = self.pipeline(Context::Range, depth)?;
        self.range_depth += 1;
        let body = self.list(depth);
        self.range_depth -= 1;
        let (body, stop) = body?;
        let otherwise = match stop {
            Stop::Eof => return self.fail("unexpected EOF: {{range}} needs {{end}}"),
            Stop::End => None,
            Stop::Else => {
                self.expect_close("else")?;
                let (otherwise, stop) = self.list(depth)?;
                match stop {
                    Stop::End => Some(otherwise),
                    Stop::Else => return self.fail("expected {{end}}; found {{else}}"),
                    Stop::Eof => return self.fail("unexpected EOF: {{range}} needs {{end}}"),
                }
            }
        };
        self.close_scope(scope);
        Ok(Node::Range {
            pipe,
            body,
            otherwise,
        })
    }

    /// A pipeline, through its closing `}}` (or `)` when parenthesised).
    fn pipeline(&mut self, context: Context, depth: usize) -> Result<Pipeline, ParseError> {
        let (declarations, assign) = self.declarations(context)?;
        let mut commands = Vec::new();
        loop {
            self.count_node()?;
            commands.push(self.command(context, depth, !commands.is_empty())?);
            let token = self.next()?;
            match token.tok {
                Tok::Pipe => continue,
                Tok::Close if context != Context::Parenthesised => break,
                Tok::RightParen if context == Context::Parenthesised => break,
                Tok::Eof => return self.fail(crate::lexer::UNCLOSED_ACTION),
                other => {
                    return self.fail(format!(
                        "unexpected {} in {}",
                        describe(&other),
                        context.name()
                    ));
                }
            }
        }
        if !assign {
            for name in &declarations {
                self.declare(name)?;
            }
        }
        Ok(Pipeline {
            declarations,
            assign,
            commands,
        })
    }

    /// `$x :=`, `$x =`, or (in `range`) `$i, $v :=`.
    fn declarations(&mut self, context: Context) -> Result<(Vec<String>, bool), ParseError> {
        let Tok::Variable(first) = self.peek()?.tok.clone() else {
            return Ok((Vec::new(), false));
        };
        let mut names = vec![first];
        let mut at = 1;
        if matches!(self.peek_at(1)?.tok, Tok::Comma) {
            let Tok::Variable(second) = self.peek_at(2)?.tok.clone() else {
                return Ok((Vec::new(), false));
            };
            if context != Context::Range {
                return self.fail(format!("too many declarations in {}", context.name()));
            }
            names.push(second);
            at = 3;
        }
        let assign = match self.peek_at(at)?.tok {
            Tok::Declare => false,
            Tok::Assign => true,
            _ if names.len() == 2 => return self.fail("expected := or = after range variables"),
            _ => return Ok((Vec::new(), false)),
        };
        for _ in 0..=at {
            self.next()?;
        }
        for name in &names {
            if name == "$" {
                return self.fail("cannot declare or assign $");
            }
            if assign && !self.is_declared(name) {
                return self.fail(format!("undefined variable {name:?}"));
            }
        }
        Ok((names, assign))
    }

    /// One command: operands up to `|`, `}}` or `)`.
    fn command(
        &mut self,
        context: Context,
        depth: usize,
        piped: bool,
    ) -> Result<Command, ParseError> {
        let mut operands = Vec::new();
        loop {
            let token = self.peek()?;
            let ends = matches!(token.tok, Tok::Pipe | Tok::Close | Tok::Eof)
                || matches!(token.tok, Tok::RightParen) && context == Context::Parenthesised;
            if ends {
                break;
            }
            if !operands.is_empty() && !token.spaced {
                let token = self.next()?;
                return self.fail(format!("unexpected {} in operand", describe(&token.tok)));
            }
            self.count_node()?;
            operands.push(self.operand(depth)?);
        }
        let mut operands = operands.into_iter();
        let Some(first) = operands.next() else {
            return self.fail(format!("missing value for {}", context.name()));
        };
        let rest: Vec<Operand> = operands.collect();
        match first {
            Operand::Function(function) => Ok(Command::Call(function, rest)),
            Operand::Nil => self.fail("nil is not a command"),
            operand if rest.is_empty() && !piped => Ok(Command::Operand(operand)),
            _ => self.fail("can't give argument to non-function"),
        }
    }

    fn operand(&mut self, depth: usize) -> Result<Operand, ParseError> {
        let token = self.next()?;
        let operand = match token.tok {
            Tok::Dot => Operand::Dot,
            Tok::Field(name) => {
                let mut path = vec![name];
                path.extend(self.fields()?);
                return Ok(Operand::Field(path));
            }
            Tok::Variable(name) => {
                if !self.is_declared(&name) {
                    return self.fail(format!("undefined variable {name:?}"));
                }
                let path = self.fields()?;
                return Ok(Operand::Variable(name, path));
            }
            Tok::LeftParen => {
                let inner = self.nest(depth)?;
                let pipe = self.pipeline(Context::Parenthesised, inner)?;
                let path = self.fields()?;
                return Ok(Operand::Pipeline(Box::new(pipe), path));
            }
            Tok::Ident(name) => match functions::lookup(&name) {
                Some(function) => Operand::Function(function),
                None => return self.fail(format!("function {name:?} not defined")),
            },
            Tok::Literal(value) => Operand::Literal(value),
            Tok::Nil => Operand::Nil,
            Tok::Eof => return self.fail(crate::lexer::UNCLOSED_ACTION),
            other => return self.fail(format!("unexpected {} in operand", describe(&other))),
        };
        if matches!(self.peek()?.tok, Tok::Field(_)) && !self.peek()?.spaced {
            return self.fail("unexpected . after term");
        }
        Ok(operand)
    }

    /// Field names that follow a term directly (`.a.b`).
    fn fields(&mut self) -> Result<Vec<String>, ParseError> {
        let mut path = Vec::new();
        loop {
            let token = self.peek()?;
            if token.spaced {
                return Ok(path);
            }
            let Tok::Field(name) = &token.tok else {
                return Ok(path);
            };
            path.push(name.clone());
            self.next()?;
            self.count_node()?;
        }
    }
}

/// A token, for a message (template text is not secret).
fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Text(_) => "text".to_string(),
        Tok::Open => "{{".to_string(),
        Tok::Close => "}}".to_string(),
        Tok::Ident(name) => format!("{name:?}"),
        Tok::Keyword(keyword) => format!("{:?}", keyword.word()),
        Tok::Field(name) => format!("field .{name}"),
        Tok::Dot => "\".\"".to_string(),
        Tok::Variable(name) => format!("variable {name}"),
        Tok::Literal(_) => "literal".to_string(),
        Tok::Nil => "nil".to_string(),
        Tok::Pipe => "\"|\"".to_string(),
        Tok::LeftParen => "\"(\"".to_string(),
        Tok::RightParen => "\")\"".to_string(),
        Tok::Declare => "\":=\"".to_string(),
        Tok::Assign => "\"=\"".to_string(),
        Tok::Comma => "\",\"".to_string(),
        Tok::Eof => "end of text".to_string(),
    }
}
