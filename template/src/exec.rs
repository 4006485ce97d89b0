//! Walks a parsed template with a value as dot, writing into a bounded output buffer and
//! paying every node, range iteration and function call from the key's step budget.

use zeroize::Zeroizing;

use crate::functions::{Function, MAX_VALUE_BYTES};
use crate::parse::{Command, Node, Operand, Pipeline};
use crate::value::{Budget, Buf, Fail, MAX_STEPS, Value, write_value};

/// How a list of nodes ended.
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'t> {
    out: Buf,
    /// Variables in scope, innermost last; names borrowed from the tree.
    variables: Vec<(&'t str, Value)>,
    budget: Budget,
}

/// Renders `tree` with `root` as `.` and `$`.
pub(crate) fn execute(tree: &[Node], root: &Value) -> Result<Zeroizing<String>, Fail> {
    execute_with(tree, root, MAX_STEPS)
}

/// [`execute`] with a given step budget.
pub(crate) fn execute_with(
    tree: &[Node],
    root: &Value,
    steps: u64,
) -> Result<Zeroizing<String>, Fail> {
    let mut exec = Exec {
        out: Buf::new(crate::MAX_OUTPUT_BYTES),
        variables: vec![("$", root.clone())],
        budget: Budget::new(steps),
    };
    exec.list(tree, root)?;
    Ok(exec.out.finish())
}

impl<'t> Exec<'t> {
    fn list(&mut self, nodes: &'t [Node], dot: &Value) -> Result<Flow, Fail> {
        for node in nodes {
            match self.node(node, dot)? {
                Flow::Normal => {}
                flow => return Ok(flow),
            }
        }
        Ok(Flow::Normal)
    }

    fn node(&mut self, node: &'t Node, dot: &Value) -> Result<Flow, Fail> {
        self.budget.step()?;
        match node {
            Node::Text(text) => {
                self.budget.bytes(text.len())?;
                self.out.push_str(text)?;
            }
            Node::Action(pipe) => {
                let value = self.pipeline(pipe, dot)?;
                if pipe.declarations.is_empty() {
                    self.print(&value)?;
                }
            }
            Node::Conditional {
                with,
                arms,
                otherwise,
            } => {
                let scope = self.variables.len();
                let mut flow = None;
                for (pipe, body) in arms {
                    let value = self.pipeline(pipe, dot)?;
                    if value.is_true() {
                        let inner = if *with { &value } else { dot };
                        flow = Some(self.list(body, inner)?);
                        break;
                    }
                }
                let flow = match (flow, otherwise) {
                    (Some(flow), _) => flow,
                    (None, Some(otherwise)) => self.list(otherwise, dot)?,
                    (None, None) => Flow::Normal,
                };
                self.variables.truncate(scope);
                return Ok(flow);
            }
            Node::Range {
                pipe,
                body,
                otherwise,
            } => return self.range(pipe, body, otherwise.as_deref(), dot),
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    /// Prints an action's value as Go does: no value (and nil) as `<no value>`.
    fn print(&mut self, value: &Value) -> Result<(), Fail> {
        let before = self.out.len();
        match value {
            Value::NoValue | Value::Nil => self.out.push_str("<no value>")?,
            other => write_value(&mut self.out, other)?,
        }
        self.budget.bytes(self.out.len() - before)
    }

    fn range(
        &mut self,
        pipe: &'t Pipeline,
        body: &'t [Node],
        otherwise: Option<&'t [Node]>,
        dot: &Value,
    ) -> Result<Flow, Fail> {
        let scope = self.variables.len();
        let value = self.commands(pipe, dot)?;
        if !pipe.assign {
            for name in &pipe.declarations {
                self.variables.push((name, Value::NoValue));
            }
        }
        let mark = self.variables.len();
        let mut ran = false;
        match &value {
            Value::List(list) => {
                for (i, item) in list.items.iter().enumerate() {
                    ran = true;
                    let index = Value::Int(i64::try_from(i).map_err(|_| Fail::Exec)?);
                    if let Flow::Break = self.iteration(pipe, body, index, item, mark)? {
                        break;
                    }
                }
            }
            Value::Map(map) => {
                for (key, item) in &map.entries {
                    ran = true;
                    if let Flow::Break =
                        self.iteration(pipe, body, Value::plain(key), item, mark)?
                    {
                        break;
                    }
                }
            }
            Value::Int(n) => {
                if pipe.declarations.len() > 1 {
                    return Err(Fail::Exec);
                }
                for i in 0..(*n).max(0) {
                    ran = true;
                    let i = Value::Int(i);
                    if let Flow::Break = self.iteration(pipe, body, i.clone(), &i, mark)? {
                        break;
                    }
                }
            }
            Value::NoValue | Value::Nil => {}
            _ => return Err(Fail::Exec),
        }
        let flow = match otherwise {
            Some(otherwise) if !ran => self.list(otherwise, dot)?,
            _ => Flow::Normal,
        };
        self.variables.truncate(scope);
        Ok(flow)
    }

    fn iteration(
        &mut self,
        pipe: &'t Pipeline,
        body: &'t [Node],
        index: Value,
        item: &Value,
        mark: usize,
    ) -> Result<Flow, Fail> {
        self.budget.step()?;
        match (pipe.declarations.as_slice(), pipe.assign) {
            ([], _) => {}
            ([_], false) => self.set_top(mark, 1, item.clone())?,
            ([_, _], false) => {
                self.set_top(mark, 2, index)?;
                self.set_top(mark, 1, item.clone())?;
            }
            ([one], true) => self.assign(one, item.clone())?,
            ([first, second], true) => {
                self.assign(first, index)?;
                self.assign(second, item.clone())?;
            }
            _ => return Err(Fail::Exec),
        }
        let flow = self.list(body, item)?;
        self.variables.truncate(mark);
        Ok(match flow {
            Flow::Break => Flow::Break,
            Flow::Normal | Flow::Continue => Flow::Normal,
        })
    }

    fn set_top(&mut self, mark: usize, from_top: usize, value: Value) -> Result<(), Fail> {
        let slot = mark.checked_sub(from_top).ok_or(Fail::Exec)?;
        let variable = self.variables.get_mut(slot).ok_or(Fail::Exec)?;
        variable.1 = value;
        Ok(())
    }

    /// Where the innermost variable `name` is; the scan is paid for (the parser bounds how
    /// many variables are in scope).
    fn find(&mut self, name: &str) -> Result<usize, Fail> {
        let from_top = self
            .variables
            .iter()
            .rev()
            .position(|(n, _)| *n == name)
            .ok_or(Fail::Exec)?;
        self.budget
            .charge(u64::try_from(from_top / 16).unwrap_or(u64::MAX))?;
        Ok(self.variables.len() - 1 - from_top)
    }

    fn assign(&mut self, name: &str, value: Value) -> Result<(), Fail> {
        let slot = self.find(name)?;
        let variable = self.variables.get_mut(slot).ok_or(Fail::Exec)?;
        variable.1 = value;
        Ok(())
    }

    fn variable(&mut self, name: &str) -> Result<Value, Fail> {
        let slot = self.find(name)?;
        self.variables
            .get(slot)
            .map(|(_, v)| v.clone())
            .ok_or(Fail::Exec)
    }

    /// A pipeline's value, with its declarations or assignments done.
    fn pipeline(&mut self, pipe: &'t Pipeline, dot: &Value) -> Result<Value, Fail> {
        let value = self.commands(pipe, dot)?;
        for name in &pipe.declarations {
            if pipe.assign {
                self.assign(name, value.clone())?;
            } else {
                self.variables.push((name, value.clone()));
            }
        }
        Ok(value)
    }

    /// A pipeline's commands, each one's value passed as the last argument of the next.
    fn commands(&mut self, pipe: &'t Pipeline, dot: &Value) -> Result<Value, Fail> {
        let mut value = None;
        for command in &pipe.commands {
            value = Some(match command {
                Command::Call(function, args) => self.call(*function, args, dot, value)?,
                Command::Operand(operand) if value.is_none() => self.operand(operand, dot)?,
                Command::Operand(_) => return Err(Fail::Exec),
            });
        }
        value.ok_or(Fail::Exec)
    }

    fn call(
        &mut self,
        function: Function,
        args: &'t [Operand],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, Fail> {
        self.budget.step()?;
        match function {
            Function::And | Function::Or => {
                let and = matches!(function, Function::And);
                let mut last = None;
                for arg in args {
                    let value = self.operand(arg, dot)?;
                    if value.is_true() != and {
                        return Ok(value);
                    }
                    last = Some(value);
                }
                if let Some(value) = piped {
                    last = Some(value);
                }
                last.ok_or(Fail::Exec)
            }
            Function::Eager(function) => {
                let mut values = Vec::with_capacity(args.len() + 1);
                for arg in args {
                    values.push(self.operand(arg, dot)?);
                }
                values.extend(piped);
                let result = function(&mut self.budget, &values)?;
                // Functions build in bounded buffers already; this keeps the promise for any
                // that hands back a string it did not build.
                if result.size() > MAX_VALUE_BYTES && matches!(result, Value::Str(_)) {
                    return Err(Fail::TooLarge);
                }
                Ok(result)
            }
        }
    }

    fn operand(&mut self, operand: &'t Operand, dot: &Value) -> Result<Value, Fail> {
        self.budget.step()?;
        match operand {
            Operand::Dot => Ok(dot.clone()),
            Operand::Field(path) => self.fields(dot.clone(), path),
            Operand::Variable(name, path) => {
                let value = self.variable(name)?;
                self.fields(value, path)
            }
            Operand::Pipeline(pipe, path) => {
                let value = self.pipeline(pipe, dot)?;
                self.fields(value, path)
            }
            Operand::Function(function) => self.call(*function, &[], dot, None),
            Operand::Literal(value) => Ok(value.clone()),
            Operand::Nil => Ok(Value::Nil),
        }
    }

    /// `.a.b` on a value: map keys (a missing one is no value, and so is anything of it).
    fn fields(&mut self, mut value: Value, path: &[String]) -> Result<Value, Fail> {
        for name in path {
            self.budget.step()?;
            value = match &value {
                Value::Map(map) => map
                    .entries
                    .get(name.as_str())
                    .cloned()
                    .unwrap_or(Value::NoValue),
                Value::NoValue => Value::NoValue,
                _ => return Err(Fail::Exec),
            };
        }
        Ok(value)
    }
}
