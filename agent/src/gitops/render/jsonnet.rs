//! Jsonnet files of a directory source, evaluated in-process as Argo CD's repo server does
//! (go-jsonnet, one VM per file): every `*.jsonnet` file of the directory (`.libsonnet` files
//! only through `import`), with `directory.jsonnet.extVars`, `tlas` and `libs`, the build
//! environment (`$ARGOCD_APP_NAME`, …) substituted into their values.
//!
//! The evaluator is rsjsonnet-lang (pure Rust, no unsafe). Every file it reads goes through
//! `Imports`, which resolves `import`, `importstr` and `importbin` as go-jsonnet's file
//! importer does (the importing file's directory, then the library paths, last first; the
//! application directory is the first library path) and refuses any path that resolves outside
//! the checkout, symlinks included.
//!
//! Bounds:
//! - **stack**: the evaluator keeps its own stack and stops at [`Jsonnet::max_stack`] frames
//!   (go-jsonnet's default, 500); the parser recurses on the thread's stack, so each file's
//!   nesting is measured first ([`nesting_depth`]) and refused over [`MAX_NESTING`], and the
//!   evaluation thread has `THREAD_STACK_BYTES` of stack;
//! - **input**: each file read is at most `max_file_bytes`, all of them `max_total_bytes`;
//! - **output**: the manifested JSON is at most `max_total_bytes`;
//! - **time**: rsjsonnet-lang cannot be interrupted. The evaluation runs on a thread of its own
//!   holding one of [`Jsonnet`]'s permits, and the render waits for it at most
//!   [`Jsonnet::timeout`] (permit wait included): a render that takes longer fails with
//!   `JsonnetTimeout`, and its thread keeps its permit until it ends, so runaway programs occupy
//!   at most the permits' number of threads and never a controller's task.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;
use rsjsonnet_lang::arena::Arena;
use rsjsonnet_lang::interner::InternedStr;
use rsjsonnet_lang::program::{
    AnalyzeError, Callbacks, EvalError, EvalErrorKind, EvalStackTraceItem, ImportError, LoadError,
    NativeError, Program, Thunk, Value,
};
use rsjsonnet_lang::span::{SpanContextId, SpanId};
use serde_json::Value as Json;

use super::{Jail, RenderError, yaml};

/// The deepest nesting of brackets and of `local`/`if`/`function`/`assert` chains one file may
/// have: the parser recurses once (a few frames) per level on the evaluation thread's stack.
/// Hand-written and generated manifests nest a few dozen levels.
pub const MAX_NESTING: usize = 1000;
/// The evaluation thread's stack: room for [`MAX_NESTING`] levels of the recursive parser and
/// analyzer in a debug build, with a wide margin.
const THREAD_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Argo CD's `directory.jsonnet`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonnetOptions {
    /// External variables (`std.extVar`).
    pub ext_vars: Vec<JsonnetVar>,
    /// Top-level arguments, for files that evaluate to a function.
    pub tlas: Vec<JsonnetVar>,
    /// Library directories, relative to the checkout root.
    pub libs: Vec<String>,
}

/// One external variable or top-level argument.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonnetVar {
    /// The name.
    pub name: String,
    /// A string, or Jsonnet code when `code`.
    pub value: String,
    /// `value` is code.
    pub code: bool,
}

/// Argo CD's build environment (`ARGOCD_APP_NAME`, `ARGOCD_APP_NAMESPACE`,
/// `ARGOCD_APP_REVISION`, …), substituted into Jsonnet variable values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildEnv {
    entries: Vec<(String, String)>,
}

/// Who and what is rendered: the parts of the build environment that come from the Application.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildIdentity {
    /// `metadata.name`.
    pub app_name: String,
    /// `spec.destination.namespace` (Argo CD's `ARGOCD_APP_NAMESPACE` is the destination's).
    pub app_namespace: String,
    /// `spec.project` (default `default`).
    pub project: String,
}

impl BuildEnv {
    /// The variables Argo CD's repo server sets for one render of `revision` (a full commit SHA).
    pub fn new(
        identity: &BuildIdentity,
        revision: &str,
        repo_url: &str,
        path: &str,
        target_revision: &str,
    ) -> BuildEnv {
        let short = |n: usize| revision.get(..n).unwrap_or(revision).to_string();
        let entries = [
            ("ARGOCD_APP_NAME", identity.app_name.clone()),
            ("ARGOCD_APP_NAMESPACE", identity.app_namespace.clone()),
            ("ARGOCD_APP_PROJECT_NAME", identity.project.clone()),
            ("ARGOCD_APP_REVISION", revision.to_string()),
            ("ARGOCD_APP_REVISION_SHORT", short(7)),
            ("ARGOCD_APP_REVISION_SHORT_8", short(8)),
            ("ARGOCD_APP_SOURCE_REPO_URL", repo_url.to_string()),
            ("ARGOCD_APP_SOURCE_PATH", path.to_string()),
            (
                "ARGOCD_APP_SOURCE_TARGET_REVISION",
                target_revision.to_string(),
            ),
        ];
        BuildEnv {
            entries: entries
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        }
    }

    /// The value of `name`, when set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `text` with `$NAME` and `${NAME}` replaced as Go's `os.Expand` (which Argo CD uses):
    /// unknown names become empty, `$$` is `$`, a `$` followed by nothing nameable stays.
    pub fn substitute(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0usize;
        let mut i = 0usize;
        while i < bytes.len() {
            if bytes[i] != b'$' || i + 1 >= bytes.len() {
                i += 1;
                continue;
            }
            out.push_str(&text[copied..i]);
            let (name, width) = shell_name(&text[i + 1..]);
            match name {
                None if width > 0 => {}
                None => out.push('$'),
                Some("$") => out.push('$'),
                Some(name) => out.push_str(self.get(name).unwrap_or_default()),
            }
            i += 1 + width;
            copied = i;
        }
        out.push_str(&text[copied.min(text.len())..]);
        out
    }
}

/// Go's `getShellName`: the name after a `$` and how many bytes it takes (a `None` name with a
/// width is bad syntax, eaten).
fn shell_name(rest: &str) -> (Option<&str>, usize) {
    let bytes = rest.as_bytes();
    let special = |c: u8| b"*#$@!?-0123456789".contains(&c);
    if bytes[0] == b'{' {
        if bytes.len() > 2 && special(bytes[1]) && bytes[2] == b'}' {
            return (Some(&rest[1..2]), 3);
        }
        return match rest[1..].find('}') {
            Some(0) => (None, 2),
            Some(end) => (Some(&rest[1..=end]), end + 2),
            None => (None, 1),
        };
    }
    if special(bytes[0]) {
        return (Some(&rest[..1]), 1);
    }
    let end = bytes
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .unwrap_or(bytes.len());
    if end == 0 {
        (None, 0)
    } else {
        (Some(&rest[..end]), end)
    }
}

/// The Jsonnet evaluator the agent shares between renders: the timeout, the evaluator's stack
/// limit and how many evaluations run at once.
#[derive(Clone, Debug)]
pub struct Jsonnet {
    timeout: Duration,
    max_stack: usize,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Default for Jsonnet {
    /// 90 s (Argo CD's exec timeout, as kustomize), a stack of 500 (go-jsonnet's), 4 at once.
    fn default() -> Self {
        Jsonnet::new(Duration::from_secs(90), 500, 4)
    }
}

impl Jsonnet {
    /// An evaluator; at most `concurrency` files at once (at least one).
    pub fn new(timeout: Duration, max_stack: usize, concurrency: usize) -> Jsonnet {
        Jsonnet {
            timeout,
            max_stack: max_stack.max(1),
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
        }
    }

    /// How long one file may take, waiting for a permit included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The evaluator's stack limit (function calls and nested evaluations).
    pub fn max_stack(&self) -> usize {
        self.max_stack
    }

    /// Evaluates one file on a thread of its own, within the timeout.
    pub(super) async fn evaluate(&self, mut evaluation: Evaluation) -> Result<Json, RenderError> {
        evaluation.max_stack = self.max_stack;
        let file = display(&evaluation.file);
        let permits = Arc::clone(&self.permits);
        let run = async move {
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|e| RenderError::Workspace(std::io::Error::other(e.to_string())))?;
            let (sender, receiver) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("jsonnet".into())
                .stack_size(THREAD_STACK_BYTES)
                .spawn(move || {
                    let result = evaluate(&evaluation);
                    // Released only now: a program still running after its render timed out
                    // holds its permit.
                    drop(permit);
                    let _ = sender.send(result);
                })
                .map_err(RenderError::Workspace)?;
            receiver
                .await
                .map_err(|e| RenderError::Workspace(std::io::Error::other(e.to_string())))?
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(RenderError::JsonnetTimeout {
                file,
                after: self.timeout,
            }),
        }
    }
}

/// One file to evaluate and everything it may use.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The checkout (the jail): nothing outside it is read.
    pub root: PathBuf,
    /// The file, relative to `root`.
    pub file: PathBuf,
    /// Library directories, relative to `root`, searched after the importing file's directory,
    /// the last one first (go-jsonnet's `JPaths`; Argo CD puts the application directory first).
    pub search: Vec<PathBuf>,
    /// External variables (values already substituted).
    pub ext_vars: Vec<JsonnetVar>,
    /// Top-level arguments (values already substituted).
    pub tlas: Vec<JsonnetVar>,
    /// The evaluator's stack limit.
    pub max_stack: usize,
    /// The largest file read.
    pub max_file_bytes: u64,
    /// All files read together, and the output on its own.
    pub max_total_bytes: u64,
}

impl Evaluation {
    /// An evaluation of `file` (relative to `root`) with nothing set and the render's default
    /// limits.
    pub fn new(root: &Path, file: &Path) -> Evaluation {
        let limits = super::RenderLimits::default();
        Evaluation {
            root: root.to_path_buf(),
            file: file.to_path_buf(),
            search: Vec::new(),
            ext_vars: Vec::new(),
            tlas: Vec::new(),
            max_stack: Jsonnet::default().max_stack,
            max_file_bytes: limits.max_file_bytes,
            max_total_bytes: limits.max_total_bytes,
        }
    }
}

/// The library directories of `libs` (relative to the checkout root, which they may not leave),
/// after the application directory `app_dir`.
pub(super) fn search_path(
    jail: &Jail,
    app_dir: &Path,
    libs: &[String],
) -> Result<Vec<PathBuf>, RenderError> {
    let mut search = vec![app_dir.to_path_buf()];
    for lib in libs {
        let refuse = |reason: &str| RenderError::Jail {
            file: lib.clone(),
            reason: format!("the Jsonnet library path {reason}"),
        };
        // Argo CD resolves a leading `/` against the repository root too.
        let mut relative = PathBuf::new();
        for component in Path::new(lib.trim_start_matches('/')).components() {
            match component {
                Component::Normal(part) => relative.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !relative.pop() {
                        return Err(refuse("leads outside the repository"));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {}
            }
        }
        let real = jail
            .root
            .join(&relative)
            .canonicalize()
            .map_err(|_| refuse("does not exist in the repository"))?;
        if !real.starts_with(&jail.real_root) {
            return Err(refuse("leads outside the repository checkout"));
        }
        if !real.is_dir() {
            return Err(refuse("is not a directory"));
        }
        search.push(relative);
    }
    Ok(search)
}

/// The objects of one file's output: an object (a `*List` kind with `items` flattened, as the
/// YAML files' lists), or an array of them (Argo CD: nested arrays are refused).
pub(super) fn objects(file: &str, output: Json) -> Result<Vec<DynamicObject>, RenderError> {
    let refuse = |message: String| RenderError::Jsonnet {
        file: file.to_string(),
        line: None,
        column: None,
        message,
    };
    let items = match output {
        Json::Array(items) => items,
        object @ Json::Object(_) => vec![object],
        other => {
            return Err(refuse(format!(
                "the output is {}, not an object or an array of objects",
                json_type(&other)
            )));
        }
    };
    let mut objects = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let Json::Object(map) = item else {
            return Err(refuse(format!(
                "item {index} of the output is {}, not an object",
                json_type(&item)
            )));
        };
        let is_list = map
            .get("kind")
            .and_then(Json::as_str)
            .is_some_and(|kind| kind.ends_with("List"))
            && matches!(map.get("items"), Some(Json::Array(_)));
        let members = match (is_list, map) {
            (true, mut map) => match map.remove("items") {
                Some(Json::Array(members)) => members,
                _ => Vec::new(),
            },
            (false, map) => vec![Json::Object(map)],
        };
        for member in members {
            let object = yaml::to_object(file, 1, member).map_err(|error| match error {
                RenderError::NotAnObject { reason, .. } => {
                    refuse(format!("item {index} of the output: {reason}"))
                }
                other => other,
            })?;
            objects.push(object);
        }
    }
    Ok(objects)
}

fn json_type(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn display(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Evaluates `evaluation.file` and returns its manifested output, blocking. Errors name the
/// file (relative to the root), the line and the column.
pub fn evaluate(evaluation: &Evaluation) -> Result<Json, RenderError> {
    let jail = Jail::new(&evaluation.root)?;
    let arena = Arena::new();
    let mut program = Program::new(&arena);
    program.set_max_stack(evaluation.max_stack);
    let mut imports = Imports {
        jail,
        search: evaluation.search.clone(),
        max_file_bytes: evaluation.max_file_bytes,
        remaining_bytes: evaluation.max_total_bytes,
        sources: HashMap::new(),
        code: Vec::new(),
        thunks: HashMap::new(),
        texts: HashMap::new(),
        failure: None,
    };
    let result = run(&mut program, &mut imports, evaluation);
    // A refusal inside an import callback is the cause; the evaluator only saw "import failed".
    match (result, imports.failure.take()) {
        (Ok(json), _) => Ok(json),
        (Err(_), Some(failure)) => Err(failure),
        (Err(error), None) => Err(error),
    }
}

fn run<'p>(
    program: &mut Program<'p>,
    imports: &mut Imports<'p>,
    evaluation: &Evaluation,
) -> Result<Json, RenderError> {
    let file = display(&evaluation.file);
    // Later entries win, as go-jsonnet's maps (and the evaluator refuses duplicates).
    let mut ext_vars: Vec<&JsonnetVar> = Vec::new();
    for var in &evaluation.ext_vars {
        ext_vars.retain(|v| v.name != var.name);
        ext_vars.push(var);
    }
    for var in ext_vars {
        let thunk = imports.variable(program, "extVar", var)?;
        let name = program.intern_str(&var.name);
        program.add_ext_var(name, &thunk);
    }
    let lexical = imports.jail.root.join(&evaluation.file);
    let real = imports.jail.check_symlink(&lexical)?;
    let thunk = imports
        .load_file(program, &lexical, &real)
        .map_err(|()| imports.failure.take().unwrap_or_else(|| unknown(&file)))?;
    let value = program
        .eval_value(&thunk, imports)
        .map_err(|error| imports.eval_error(program, &file, &error))?;
    let value = if value.is_function() {
        let mut named: Vec<(InternedStr<'p>, Thunk<'p>)> = Vec::new();
        for var in &evaluation.tlas {
            let thunk = imports.variable(program, "tla", var)?;
            let name = program.intern_str(&var.name);
            named.retain(|(n, _)| *n != name);
            named.push((name, thunk));
        }
        program
            .eval_call(&thunk, &[], &named, imports)
            .map_err(|error| imports.eval_error(program, &file, &error))?
    } else {
        value
    };
    let text = program
        .manifest_json(&value, false)
        .map_err(|error| imports.eval_error(program, &file, &error))?;
    let limit = evaluation.max_total_bytes;
    if u64::try_from(text.len()).unwrap_or(u64::MAX) > limit {
        return Err(RenderError::TooLarge {
            path: file,
            reason: format!(
                "the Jsonnet output is {} bytes, more than the limit of {limit}",
                text.len()
            ),
        });
    }
    serde_json::from_str(&text).map_err(|error| RenderError::Jsonnet {
        file,
        line: None,
        column: None,
        message: format!("failed to read the output as JSON: {error}"),
    })
}

fn unknown(file: &str) -> RenderError {
    RenderError::Jsonnet {
        file: file.to_string(),
        line: None,
        column: None,
        message: "failed to load the file".into(),
    }
}

/// One loaded source: its path for messages and imports, and where its lines start.
struct Source {
    /// Relative to the checkout (or `<extVar:name>` for code variables).
    shown: String,
    /// The directory relative imports start from (`None` for code variables: as go-jsonnet's
    /// snippets, they import from the current directory, which is the application directory).
    dir: Option<PathBuf>,
    line_starts: Vec<usize>,
}

impl Source {
    fn new(shown: String, dir: Option<PathBuf>, text: &[u8]) -> Source {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Source {
            shown,
            dir,
            line_starts,
        }
    }

    /// 1-based line and column of a byte offset (the column counts bytes, as go-jsonnet).
    fn position(&self, offset: usize) -> (u64, u64) {
        let line = self.line_starts.partition_point(|start| *start <= offset);
        let start = self
            .line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        (line as u64, (offset - start + 1) as u64)
    }
}

/// The file reads of one evaluation, confined to the checkout, and its loaded sources.
struct Imports<'p> {
    jail: Jail,
    /// Library directories relative to the checkout, searched last first.
    search: Vec<PathBuf>,
    max_file_bytes: u64,
    remaining_bytes: u64,
    sources: HashMap<SpanContextId, Source>,
    /// Code variables' snippets, kept for their positions.
    code: Vec<SpanContextId>,
    /// Real path → the loaded file (imported once per evaluation, as go-jsonnet caches).
    thunks: HashMap<PathBuf, Thunk<'p>>,
    /// Real path → the text of `importstr`/`importbin`.
    texts: HashMap<PathBuf, Vec<u8>>,
    /// Why the last import failed, when it was refused or broken rather than not found.
    failure: Option<RenderError>,
}

impl<'p> Imports<'p> {
    /// The thunk of an external variable or top-level argument: a string, or code.
    fn variable(
        &mut self,
        program: &mut Program<'p>,
        what: &str,
        var: &JsonnetVar,
    ) -> Result<Thunk<'p>, RenderError> {
        if !var.code {
            return Ok(program.value_to_thunk(&Value::string(&var.value)));
        }
        let shown = format!("<{what}:{}>", var.name);
        let text = var.value.as_bytes();
        check_nesting(&shown, text)?;
        let (context, _) = program.span_manager_mut().insert_source_context(text.len());
        self.sources
            .insert(context, Source::new(shown.clone(), None, text));
        self.code.push(context);
        match program.load_source(context, text, true, &shown) {
            Ok(thunk) => Ok(thunk),
            Err(error) => {
                // As go-jsonnet, a broken variable fails only the evaluations that use it: its
                // thunk raises the syntax error when forced.
                let message = self.load_error(program, &shown, &error).to_string();
                let raising = format!(
                    "error {}",
                    serde_json::to_string(&message).unwrap_or_else(|_| "'broken variable'".into())
                );
                let (context, _) = program
                    .span_manager_mut()
                    .insert_source_context(raising.len());
                program
                    .load_source(context, raising.as_bytes(), false, &shown)
                    .map_err(|error| self.load_error(program, &shown, &error))
            }
        }
    }

    /// Loads a file (already checked to be inside the checkout) as Jsonnet.
    fn load_file(
        &mut self,
        program: &mut Program<'p>,
        lexical: &Path,
        real: &Path,
    ) -> Result<Thunk<'p>, ()> {
        if let Some(thunk) = self.thunks.get(real) {
            return Ok(thunk.clone());
        }
        let shown = self.jail.relative(lexical);
        let text = self.read(lexical, real)?;
        if let Err(error) = check_nesting(&shown, &text) {
            self.failure = Some(error);
            return Err(());
        }
        let (context, _) = program.span_manager_mut().insert_source_context(text.len());
        let dir = lexical.parent().map(Path::to_path_buf);
        self.sources
            .insert(context, Source::new(shown.clone(), dir, &text));
        let thunk = match program.load_source(context, &text, true, &shown) {
            Ok(thunk) => thunk,
            Err(error) => {
                self.failure = Some(self.load_error(program, &shown, &error));
                return Err(());
            }
        };
        self.thunks.insert(real.to_path_buf(), thunk.clone());
        Ok(thunk)
    }

    /// Reads a file within the size limits.
    fn read(&mut self, lexical: &Path, real: &Path) -> Result<Vec<u8>, ()> {
        let file = self.jail.relative(lexical);
        let result = (|| {
            let size = std::fs::metadata(real)
                .map_err(|source| RenderError::Read {
                    file: file.clone(),
                    source,
                })?
                .len();
            if size > self.max_file_bytes {
                return Err(RenderError::Jail {
                    file: file.clone(),
                    reason: format!(
                        "the file is {size} bytes, more than the limit of {}",
                        self.max_file_bytes
                    ),
                });
            }
            if size > self.remaining_bytes {
                return Err(RenderError::TooLarge {
                    path: file.clone(),
                    reason: "the files this Jsonnet program reads are more than the render's limit together".into(),
                });
            }
            self.remaining_bytes -= size;
            std::fs::read(real).map_err(|source| RenderError::Read {
                file: file.clone(),
                source,
            })
        })();
        result.map_err(|error| {
            self.failure = Some(error);
        })
    }

    /// Where `path` imported from the file of `from` is: the importing file's directory, then
    /// the library paths, the last one first. `Ok(None)`: found nowhere. Refuses absolute
    /// paths and anything that resolves outside the checkout.
    fn resolve(
        &mut self,
        program: &Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<Option<(PathBuf, PathBuf)>, ()> {
        let importing = self.importing_file(program, from);
        if Path::new(path).is_absolute() {
            self.failure = Some(RenderError::Jail {
                file: importing,
                reason: format!(
                    "import {path:?} is an absolute path; imports must stay inside the repository"
                ),
            });
            return Err(());
        }
        let (context, _, _) = program.span_manager().get_span(from);
        let own_dir = match self.sources.get(&context).and_then(|s| s.dir.clone()) {
            Some(dir) => dir,
            // Code variables import from the application directory (the first library path).
            None => self
                .jail
                .root
                .join(self.search.first().cloned().unwrap_or_default()),
        };
        let mut candidates = vec![own_dir];
        candidates.extend(self.search.iter().rev().map(|dir| self.jail.root.join(dir)));
        for dir in candidates {
            let lexical = dir.join(path);
            if std::fs::symlink_metadata(&lexical).is_err() {
                continue;
            }
            let real = match lexical.canonicalize() {
                Ok(real) => real,
                Err(_) => {
                    self.failure = Some(RenderError::Jail {
                        file: self.jail.relative(&lexical),
                        reason: format!(
                            "import {path:?} from {importing} is a dangling or looping symlink"
                        ),
                    });
                    return Err(());
                }
            };
            if !real.starts_with(&self.jail.real_root) {
                self.failure = Some(RenderError::Jail {
                    file: importing,
                    reason: format!("import {path:?} leads outside the repository checkout"),
                });
                return Err(());
            }
            if real.is_dir() {
                continue;
            }
            return Ok(Some((lexical, real)));
        }
        Ok(None)
    }

    fn importing_file(&self, program: &Program<'p>, from: SpanId) -> String {
        let (context, _, _) = program.span_manager().get_span(from);
        self.sources
            .get(&context)
            .map(|s| s.shown.clone())
            .unwrap_or_else(|| "?".into())
    }

    fn read_text(
        &mut self,
        program: &Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<Vec<u8>, ImportError> {
        let Some((lexical, real)) = self
            .resolve(program, from, path)
            .map_err(|()| ImportError)?
        else {
            return Err(ImportError);
        };
        if let Some(text) = self.texts.get(&real) {
            return Ok(text.clone());
        }
        let text = self.read(&lexical, &real).map_err(|()| ImportError)?;
        self.texts.insert(real, text.clone());
        Ok(text)
    }

    /// A location and a message for an evaluation error.
    fn eval_error(&self, program: &Program<'p>, file: &str, error: &EvalError) -> RenderError {
        let span = eval_span(&error.kind).or_else(|| {
            error
                .stack_trace
                .iter()
                .rev()
                .find_map(|item| match item {
                    EvalStackTraceItem::Expr { span }
                    | EvalStackTraceItem::Variable { span, .. }
                    | EvalStackTraceItem::Import { span } => Some(*span),
                    EvalStackTraceItem::Call { span, .. }
                    | EvalStackTraceItem::ArrayItem { span, .. }
                    | EvalStackTraceItem::ObjectField { span, .. } => *span,
                    _ => None,
                })
                .filter(|span| self.is_ours(program, *span))
        });
        self.located(program, file, span, eval_message(&error.kind))
    }

    fn load_error(&self, program: &Program<'p>, file: &str, error: &LoadError) -> RenderError {
        let (span, message) = load_detail(error);
        self.located(program, file, Some(span), message)
    }

    fn is_ours(&self, program: &Program<'p>, span: SpanId) -> bool {
        let (context, _, _) = program.span_manager().get_span(span);
        self.sources.contains_key(&context)
    }

    /// The error at `span` (when it is in one of our sources), else in `file`.
    fn located(
        &self,
        program: &Program<'p>,
        file: &str,
        span: Option<SpanId>,
        message: String,
    ) -> RenderError {
        let at = span.and_then(|span| {
            let (context, start, _) = program.span_manager().get_span(span);
            self.sources.get(&context).map(|source| {
                let (line, column) = source.position(start);
                (source.shown.clone(), line, column)
            })
        });
        match at {
            Some((shown, line, column)) => RenderError::Jsonnet {
                file: shown,
                line: Some(line),
                column: Some(column),
                message,
            },
            None => RenderError::Jsonnet {
                file: file.to_string(),
                line: None,
                column: None,
                message,
            },
        }
    }
}

impl<'p> Callbacks<'p> for Imports<'p> {
    fn import(
        &mut self,
        program: &mut Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<Thunk<'p>, ImportError> {
        let Some((lexical, real)) = self
            .resolve(program, from, path)
            .map_err(|()| ImportError)?
        else {
            return Err(ImportError);
        };
        self.load_file(program, &lexical, &real)
            .map_err(|()| ImportError)
    }

    fn import_str(
        &mut self,
        program: &mut Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<String, ImportError> {
        let text = self.read_text(program, from, path)?;
        String::from_utf8(text).map_err(|_| {
            self.failure = Some(RenderError::Jsonnet {
                file: self.importing_file(program, from),
                line: None,
                column: None,
                message: format!("importstr {path:?}: the file is not UTF-8 text"),
            });
            ImportError
        })
    }

    fn import_bin(
        &mut self,
        program: &mut Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<Vec<u8>, ImportError> {
        self.read_text(program, from, path)
    }

    fn trace(&mut self, _program: &mut Program<'p>, _message: &str, _stack: &[EvalStackTraceItem]) {
        // std.trace output is the program's own logging; a manifest's values stay out of the
        // agent's log.
    }

    fn native_call(
        &mut self,
        _program: &mut Program<'p>,
        _name: InternedStr<'p>,
        _args: &[Value<'p>],
    ) -> Result<Value<'p>, NativeError> {
        // No native functions are registered (Argo CD registers none either).
        Err(NativeError)
    }
}

/// The span an evaluation error names itself, when it names one.
fn eval_span(kind: &EvalErrorKind) -> Option<SpanId> {
    use EvalErrorKind as K;
    match kind {
        K::InvalidIndexedType { span, .. }
        | K::InvalidSlicedType { span, .. }
        | K::SliceIndexOrStepIsNotNumber { span, .. }
        | K::StringIndexIsNotNumber { span, .. }
        | K::ArrayIndexIsNotNumber { span, .. }
        | K::NumericIndexIsNotValid { span, .. }
        | K::NumericIndexOutOfRange { span, .. }
        | K::ObjectIndexIsNotString { span, .. }
        | K::RepeatedFieldName { span, .. }
        | K::FieldNameIsNotString { span, .. }
        | K::UnknownObjectField { span, .. }
        | K::FieldOfNonObject { span }
        | K::SuperWithoutSuperObject { span }
        | K::ForSpecValueIsNotArray { span, .. }
        | K::CondIsNotBool { span, .. }
        | K::InvalidUnaryOpType { span, .. }
        | K::AssertFailed { span, .. }
        | K::ExplicitError { span, .. }
        | K::ImportFailed { span, .. } => Some(*span),
        K::CalleeIsNotFunction { span, .. }
        | K::TooManyCallArgs { span, .. }
        | K::UnknownCallParam { span, .. }
        | K::RepeatedCallParam { span, .. }
        | K::CallParamNotBound { span, .. }
        | K::InvalidBinaryOpTypes { span, .. }
        | K::NumberNotBitwiseSafe { span }
        | K::NumberOverflow { span }
        | K::NumberNan { span }
        | K::DivByZero { span }
        | K::ShiftByNegative { span }
        | K::Other { span, .. } => *span,
        _ => None,
    }
}

/// A sentence for an evaluation error. Values are not quoted (a manifest may hold secrets),
/// except the program's own `error` and `assert` messages.
fn eval_message(kind: &EvalErrorKind) -> String {
    use EvalErrorKind as K;
    let t = |t: &rsjsonnet_lang::program::EvalErrorValueType| format!("{t:?}").to_lowercase();
    match kind {
        K::StackOverflow => "stack overflow: the evaluation is nested deeper than the stack limit (too deep recursion?)".into(),
        K::InfiniteRecursion => "infinite recursion".into(),
        K::InvalidIndexedType { got_type, .. } => format!("cannot index a value of type {}", t(got_type)),
        K::InvalidSlicedType { got_type, .. } => format!("cannot slice a value of type {}", t(got_type)),
        K::NumericIndexOutOfRange { index, length, .. } => format!("index {index} out of range for an array of length {length}"),
        K::UnknownObjectField { field_name, .. } => format!("field does not exist: {field_name}"),
        K::RepeatedFieldName { name, .. } => format!("duplicate field name: {name}"),
        K::FieldOfNonObject { .. } => "field access on a value that is not an object".into(),
        K::CondIsNotBool { got_type, .. } => format!("condition must be a boolean, got {}", t(got_type)),
        K::CalleeIsNotFunction { got_type, .. } => format!("only functions can be called, got {}", t(got_type)),
        K::TooManyCallArgs { num_params, .. } => format!("too many arguments, the function has {num_params} parameter(s)"),
        K::UnknownCallParam { param_name, .. } => format!("function has no parameter {param_name}"),
        K::RepeatedCallParam { param_name, .. } => format!("argument {param_name} given more than once"),
        K::CallParamNotBound { param_name, .. } => format!("missing argument: {param_name} (a top-level argument not set in tlas?)"),
        K::InvalidUnaryOpType { op, rhs_type, .. } => format!("unary operator {op:?} does not apply to {}", t(rhs_type)),
        K::InvalidBinaryOpTypes { op, lhs_type, rhs_type, .. } => format!("binary operator {op:?} does not apply to {} and {}", t(lhs_type), t(rhs_type)),
        K::DivByZero { .. } => "division by zero".into(),
        K::InvalidStdFuncArgType { func_name, arg_index, got_type, .. } => format!("std.{func_name}: argument {arg_index} has the wrong type ({})", t(got_type)),
        K::AssertFailed { message, .. } => match message {
            Some(message) => format!("assertion failed: {message}"),
            None => "assertion failed".into(),
        },
        K::AssertEqualFailed { .. } => "std.assertEqual failed".into(),
        K::ExplicitError { message, .. } => format!("error: {message}"),
        K::ImportFailed { path, .. } => format!("failed to import {path:?}: no such file next to the importing file or in the library paths"),
        K::UnknownExtVar { name } => format!("undefined external variable: {name} (not set in extVars)"),
        K::ManifestFunction => "the output contains a function, which cannot be manifested".into(),
        K::Other { message, .. } => message.clone(),
        other => {
            // The variant's name says what failed; its fields may quote values.
            let debug = format!("{other:?}");
            let name = debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("error");
            format!("evaluation error ({name})")
        }
    }
}

/// The span and a sentence of a lexing, parsing or analysis error.
fn load_detail(error: &LoadError) -> (SpanId, String) {
    use rsjsonnet_lang::lexer::LexError as L;
    match error {
        LoadError::Lex(error) => {
            let span = match error {
                L::InvalidChar { span, .. }
                | L::InvalidUtf8 { span, .. }
                | L::UnfinishedMultilineComment { span }
                | L::LeadingZeroInNumber { span }
                | L::MissingFracDigits { span }
                | L::MissingExpDigits { span }
                | L::MissingDigitAfterUnderscore { span }
                | L::ExpOverflow { span }
                | L::InvalidEscapeInString { span, .. }
                | L::IncompleteUnicodeEscape { span }
                | L::InvalidUtf16EscapeSequence { span, .. }
                | L::UnfinishedString { span }
                | L::MissingLineBreakAfterTextBlockStart { span }
                | L::MissingWhitespaceTextBlockStart { span }
                | L::InvalidTextBlockTermination { span } => *span,
            };
            let debug = format!("{error:?}");
            let name = debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("error");
            (span, format!("syntax error ({name})"))
        }
        LoadError::Parse(rsjsonnet_lang::parser::ParseError::Expected {
            span,
            expected,
            instead,
        }) => {
            let expected: Vec<String> = expected.iter().map(|e| format!("{e:?}")).collect();
            (
                *span,
                format!(
                    "syntax error: expected {}, found {instead:?}",
                    expected.join(" or ")
                ),
            )
        }
        LoadError::Analyze(error) => match error {
            AnalyzeError::UnknownVariable { span, name } => {
                (*span, format!("unknown variable: {name}"))
            }
            AnalyzeError::SelfOutsideObject { self_span } => {
                (*self_span, "self used outside an object".into())
            }
            AnalyzeError::SuperOutsideObject { super_span } => {
                (*super_span, "super used outside an object".into())
            }
            AnalyzeError::DollarOutsideObject { dollar_span } => {
                (*dollar_span, "$ used outside an object".into())
            }
            AnalyzeError::RepeatedLocalName {
                repeated_span,
                name,
                ..
            } => (*repeated_span, format!("duplicate local: {name}")),
            AnalyzeError::RepeatedFieldName {
                repeated_span,
                name,
                ..
            } => (*repeated_span, format!("duplicate field: {name}")),
            AnalyzeError::RepeatedParamName {
                repeated_span,
                name,
                ..
            } => (*repeated_span, format!("duplicate parameter: {name}")),
            AnalyzeError::PositionalArgAfterNamed { arg_span } => {
                (*arg_span, "positional argument after a named one".into())
            }
            AnalyzeError::TextBlockAsImportPath { span } => {
                (*span, "a text block cannot be an import path".into())
            }
            AnalyzeError::ComputedImportPath { span } => {
                (*span, "import paths must be string literals".into())
            }
        },
    }
}

fn check_nesting(file: &str, text: &[u8]) -> Result<(), RenderError> {
    let depth = nesting_depth(text);
    if depth > MAX_NESTING {
        return Err(RenderError::Jsonnet {
            file: file.to_string(),
            line: None,
            column: None,
            message: format!(
                "the program nests {depth} levels deep, more than the limit of {MAX_NESTING}"
            ),
        });
    }
    Ok(())
}

/// An upper estimate of how deep the parser will recurse for `text`: bracket depth plus, per
/// bracket level, the chain of `local`, `if`, `function`, `assert` and unary operators that
/// open an expression running to the next `,`, `;`-less end or closing bracket. Strings,
/// text blocks and comments are skipped.
pub fn nesting_depth(text: &[u8]) -> usize {
    // Per bracket level, the chain of expression-opening keywords and operators so far;
    // `chained` is their sum, so each step is O(1).
    let mut levels: Vec<usize> = vec![0];
    let mut chained = 0usize;
    let mut deepest = 0usize;
    let mut i = 0usize;
    let open_expression = |levels: &mut Vec<usize>, chained: &mut usize| {
        if let Some(last) = levels.last_mut() {
            *last += 1;
            *chained += 1;
        }
        levels.len() - 1 + *chained
    };
    while i < text.len() {
        let c = text[i];
        match c {
            b'/' if text.get(i + 1) == Some(&b'/') => {
                i = skip_line(text, i);
                continue;
            }
            b'#' => {
                i = skip_line(text, i);
                continue;
            }
            b'/' if text.get(i + 1) == Some(&b'*') => {
                i = find(text, i + 2, b"*/").map_or(text.len(), |end| end + 2);
                continue;
            }
            b'|' if text[i..].starts_with(b"|||") => {
                i = find(text, i + 3, b"|||").map_or(text.len(), |end| end + 3);
                continue;
            }
            b'"' | b'\'' => {
                let verbatim = i > 0 && text[i - 1] == b'@';
                i = skip_string(text, i, verbatim);
                continue;
            }
            b'(' | b'[' | b'{' => {
                levels.push(0);
                deepest = deepest.max(levels.len() - 1 + chained);
            }
            b')' | b']' | b'}' if levels.len() > 1 => {
                chained -= levels.pop().unwrap_or(0);
            }
            b',' => {
                if let Some(last) = levels.last_mut() {
                    chained -= *last;
                    *last = 0;
                }
            }
            b'!' | b'~' => deepest = deepest.max(open_expression(&mut levels, &mut chained)),
            // Unary only after an operator or an opening: `a - b` is a loop, `- - a` recursion.
            b'-' | b'+' if is_unary_position(text, i) => {
                deepest = deepest.max(open_expression(&mut levels, &mut chained));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = text[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map_or(text.len(), |n| i + n);
                if matches!(
                    &text[i..end],
                    b"local" | b"if" | b"function" | b"assert" | b"else" | b"error"
                ) {
                    deepest = deepest.max(open_expression(&mut levels, &mut chained));
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    deepest
}

fn is_unary_position(text: &[u8], at: usize) -> bool {
    text[..at]
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|b| b"([{,:;=+-*/%!~<>&|^".contains(b))
}

fn skip_line(text: &[u8], from: usize) -> usize {
    find(text, from, b"\n").map_or(text.len(), |end| end + 1)
}

fn find(text: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    text.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|n| from + n)
}

fn skip_string(text: &[u8], start: usize, verbatim: bool) -> usize {
    let quote = text[start];
    let mut i = start + 1;
    while i < text.len() {
        match text[i] {
            b'\\' if !verbatim => i += 2,
            c if c == quote => {
                if verbatim && text.get(i + 1) == Some(&quote) {
                    i += 2;
                    continue;
                }
                return i + 1;
            }
            _ => i += 1,
        }
    }
    text.len()
}
