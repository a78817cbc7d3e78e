//! A minimal pickle reader for PyTorch checkpoints.
//!
//! It runs the pickle virtual machine without executing anything: globals stay names,
//! calls (`REDUCE`, `NEWOBJ`) stay unevaluated [`Object::Call`]s and persistent ids stay
//! [`Object::Persistent`], so [`super::torch`] can interpret the few constructors it knows.
//!
//! Objects live in one flat arena and refer to each other by [`Id`]; mutable containers
//! are shared through the memo exactly as in Python, cycles are harmless, and dropping or
//! walking the result never recurses. Every read is bounds-checked and memory stays
//! proportional to the input, so arbitrary bytes give an error, never a panic.

use std::collections::HashMap;
use std::fmt;

/// Index of an object in a [`Pickle`]'s arena.
pub type Id = usize;

/// One unpickled value.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// Python's `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A wider integer, as little-endian two's-complement bytes (e.g. torch's magic number).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string (or a protocol-0/1 string that is not UTF-8).
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list.
    List(Vec<Id>),
    /// A dict (or `OrderedDict`), pairs in insertion order; a repeated key appears twice and
    /// the later pair wins, as in Python.
    Dict(Vec<(Id, Id)>),
    /// A set or frozenset.
    Set(Vec<Id>),
    /// A global reference `module.name` (class or function), never resolved.
    Global {
        /// The module, e.g. `torch._utils`.
        module: String,
        /// The name within it, e.g. `_rebuild_tensor_v2`.
        name: String,
    },
    /// An unevaluated call `func(*args)` from `REDUCE`/`NEWOBJ`, with the state a later
    /// `BUILD` gave it.
    Call {
        /// The callable (usually a [`Object::Global`]).
        func: Id,
        /// The argument tuple.
        args: Id,
        /// The `BUILD` state, if any.
        state: Option<Id>,
    },
    /// A persistent id (`BINPERSID`): a reference to data outside the pickle.
    Persistent(Id),
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    /// Byte offset of the offending opcode within the pickle.
    pub offset: usize,
    /// What went wrong.
    pub reason: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pickle: {} (at byte {})", self.reason, self.offset)
    }
}

impl std::error::Error for PickleError {}

/// An unpickled object graph: the arena and its root.
#[derive(Debug, Clone)]
pub struct Pickle {
    objects: Vec<Object>,
    root: Id,
}

/// Highest pickle protocol we know (Python 3.8+).
const MAX_PROTOCOL: u8 = 5;

/// What `get` returns for an id from elsewhere, so lookups never panic.
static NONE: Object = Object::None;

impl Pickle {
    /// Run one pickle from the start of `bytes` up to its `STOP`; returns the graph and the
    /// number of bytes consumed (legacy torch files hold several pickles back to back).
    pub fn load(bytes: &[u8]) -> Result<(Pickle, usize), PickleError> {
        Machine::new(bytes).run()
    }

    /// The object the pickle evaluates to.
    pub fn root(&self) -> Id {
        self.root
    }

    /// The object with `id`; [`Object::None`] for an id that is not in this pickle.
    pub fn get(&self, id: Id) -> &Object {
        self.objects.get(id).unwrap_or(&NONE)
    }

    /// Every object created while unpickling, reachable from the root or not.
    pub fn objects(&self) -> &[Object] {
        &self.objects
    }

    /// The string `id` holds, if it is one.
    pub fn as_str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Object::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer `id` holds (booleans count, as in Python).
    pub fn as_int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Object::Int(i) => Some(*i),
            Object::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn as_seq(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Object::Tuple(items) | Object::List(items) => Some(items),
            _ => None,
        }
    }

    /// `(module, name)` if `id` is a global.
    pub fn as_global(&self, id: Id) -> Option<(&str, &str)> {
        match self.get(id) {
            Object::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// The value of a dict under the string key `key` (last pair wins).
    pub fn dict_get(&self, dict: Id, key: &str) -> Option<Id> {
        match self.get(dict) {
            Object::Dict(pairs) => pairs
                .iter()
                .rev()
                .find(|(k, _)| self.as_str(*k) == Some(key))
                .map(|&(_, v)| v),
            _ => None,
        }
    }
}

/// The virtual machine's state while running one pickle.
struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for error messages.
    op_start: usize,
    objects: Vec<Object>,
    stack: Vec<Id>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
}

type Step<T> = Result<T, PickleError>;

impl<'a> Machine<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Machine {
            bytes,
            pos: 0,
            op_start: 0,
            objects: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn err<T>(&self, reason: impl Into<String>) -> Step<T> {
        Err(PickleError {
            offset: self.op_start,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let bytes = self.bytes;
        match self
            .pos
            .checked_add(n)
            .and_then(|end| bytes.get(self.pos..end))
        {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => self.err("truncated"),
        }
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u16(&mut self) -> Step<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Step<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Step<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length prefix; `take` then checks it against what is left, so no huge allocation.
    fn len(&mut self, n: u64) -> Step<usize> {
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.err("length out of range"),
        }
    }

    /// A newline-terminated line (protocol-0 arguments such as `GLOBAL`'s).
    fn line(&mut self) -> Step<&'a str> {
        let rest = self.bytes.get(self.pos..).unwrap_or(&[]);
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("truncated line");
        };
        let line = self.take(n + 1)?;
        match std::str::from_utf8(&line[..n]) {
            Ok(s) => Ok(s),
            Err(_) => self.err("line is not UTF-8"),
        }
    }

    fn utf8(&self, raw: &[u8]) -> Step<String> {
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.err("string is not UTF-8"),
        }
    }

    fn alloc(&mut self, obj: Object) -> Id {
        self.objects.push(obj);
        self.objects.len() - 1
    }

    fn push(&mut self, obj: Object) {
        let id = self.alloc(obj);
        self.stack.push(id);
    }

    fn pop(&mut self) -> Step<Id> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return self.err("pop across a MARK");
        }
        match self.stack.pop() {
            Some(id) => Ok(id),
            None => self.err("stack underflow"),
        }
    }

    fn top(&self) -> Step<Id> {
        match self.stack.last() {
            Some(&id) if self.marks.last().is_none_or(|&m| m < self.stack.len()) => Ok(id),
            _ => self.err("stack underflow"),
        }
    }

    /// Everything above the last `MARK`, removing the mark.
    fn pop_mark(&mut self) -> Step<Vec<Id>> {
        let Some(mark) = self.marks.pop() else {
            return self.err("no MARK");
        };
        if mark > self.stack.len() {
            return self.err("MARK above the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, key: u64) -> Step<()> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Step<()> {
        match self.memo.get(&key) {
            Some(&id) => {
                self.stack.push(id);
                Ok(())
            }
            None => self.err(format!("memo key {key} not found")),
        }
    }

    fn int_from_le(&self, raw: &[u8]) -> Object {
        if raw.is_empty() {
            return Object::Int(0);
        }
        if raw.len() <= 8 {
            // Sign-extend from the top byte.
            let fill = if raw[raw.len() - 1] & 0x80 != 0 {
                0xff
            } else {
                0
            };
            let mut buf = [fill; 8];
            buf[..raw.len()].copy_from_slice(raw);
            Object::Int(i64::from_le_bytes(buf))
        } else {
            Object::BigInt(raw.to_vec())
        }
    }

    fn set_items(&mut self, target: Id, items: Vec<Id>) -> Step<()> {
        if !items.len().is_multiple_of(2) {
            return self.err("odd number of items for SETITEMS");
        }
        match self.objects.get_mut(target) {
            Some(Object::Dict(pairs)) => {
                pairs.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            _ => self.err("SETITEM on something that is not a dict"),
        }
    }

    fn append(&mut self, target: Id, items: Vec<Id>) -> Step<()> {
        match self.objects.get_mut(target) {
            Some(Object::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => self.err("APPEND on something that is not a list"),
        }
    }

    fn add_to_set(&mut self, target: Id, items: Vec<Id>) -> Step<()> {
        match self.objects.get_mut(target) {
            Some(Object::Set(set)) => {
                set.extend(items);
                Ok(())
            }
            _ => self.err("ADDITEMS on something that is not a set"),
        }
    }

    /// `func(*args)`: dict-like constructors become real dicts so that the `SETITEMS` that
    /// follow (how `OrderedDict` pickles its items) have somewhere to go.
    fn call(&mut self, func: Id, args: Id) -> Object {
        let dict_like = matches!(
            self.objects.get(func),
            Some(Object::Global { module, name })
                if (module == "collections" && name == "OrderedDict")
                    || (module == "builtins" && name == "dict")
                    || (module == "__builtin__" && name == "dict")
        );
        let no_args = matches!(self.objects.get(args), Some(Object::Tuple(a)) if a.is_empty());
        if dict_like && no_args {
            Object::Dict(Vec::new())
        } else {
            Object::Call {
                func,
                args,
                state: None,
            }
        }
    }

    fn run(mut self) -> Step<(Pickle, usize)> {
        loop {
            self.op_start = self.pos;
            let op = self.u8()?;
            match op {
                // PROTO
                0x80 => {
                    let v = self.u8()?;
                    if v > MAX_PROTOCOL {
                        return self.err(format!("unsupported protocol {v}"));
                    }
                }
                // FRAME: framing only groups opcodes; the content follows inline.
                0x95 => {
                    self.u64()?;
                }
                // STOP
                b'.' => {
                    let root = self.pop()?;
                    let end = self.pos;
                    return Ok((
                        Pickle {
                            objects: self.objects,
                            root,
                        },
                        end,
                    ));
                }
                // MARK
                b'(' => self.marks.push(self.stack.len()),
                // POP
                b'0' => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        // Python pops the mark when nothing is above it.
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark()?;
                }
                // DUP
                b'2' => {
                    let id = self.top()?;
                    self.stack.push(id);
                }
                // PUT (protocol 0: decimal key on a line)
                b'p' => {
                    let line = self.line()?;
                    let Ok(key) = line.trim().parse::<u64>() else {
                        return self.err("bad PUT key");
                    };
                    self.memo_put(key)?;
                }
                // BINPUT
                b'q' => {
                    let key = self.u8()?;
                    self.memo_put(u64::from(key))?;
                }
                // LONG_BINPUT
                b'r' => {
                    let key = self.u32()?;
                    self.memo_put(u64::from(key))?;
                }
                // MEMOIZE
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                // GET
                b'g' => {
                    let line = self.line()?;
                    let Ok(key) = line.trim().parse::<u64>() else {
                        return self.err("bad GET key");
                    };
                    self.memo_get(key)?;
                }
                // BINGET
                b'h' => {
                    let key = self.u8()?;
                    self.memo_get(u64::from(key))?;
                }
                // LONG_BINGET
                b'j' => {
                    let key = self.u32()?;
                    self.memo_get(u64::from(key))?;
                }
                // NONE, NEWTRUE, NEWFALSE
                b'N' => self.push(Object::None),
                0x88 => self.push(Object::Bool(true)),
                0x89 => self.push(Object::Bool(false)),
                // BININT, BININT1, BININT2
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Object::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Object::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Object::Int(i64::from(v)));
                }
                // INT (protocol 0; "01"/"00" are True/False)
                b'I' => {
                    let line = self.line()?;
                    let obj = match line.trim() {
                        "01" => Object::Bool(true),
                        "00" => Object::Bool(false),
                        s => match s.parse::<i64>() {
                            Ok(v) => Object::Int(v),
                            Err(_) => return self.err("bad INT"),
                        },
                    };
                    self.push(obj);
                }
                // LONG1, LONG4
                0x8a => {
                    let n = usize::from(self.u8()?);
                    let raw = self.take(n)?;
                    let obj = self.int_from_le(raw);
                    self.push(obj);
                }
                0x8b => {
                    let n = self.u32()?;
                    let n = self.len(u64::from(n))?;
                    let raw = self.take(n)?;
                    let obj = self.int_from_le(raw);
                    self.push(obj);
                }
                // BINFLOAT (big-endian, unlike everything else)
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Object::Float(v));
                }
                // FLOAT (protocol 0)
                b'F' => {
                    let line = self.line()?;
                    let Ok(v) = line.trim().parse::<f64>() else {
                        return self.err("bad FLOAT");
                    };
                    self.push(Object::Float(v));
                }
                // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let raw = self.take(n)?;
                    let s = self.utf8(raw)?;
                    self.push(Object::Str(s));
                }
                b'X' => {
                    let n = self.u32()?;
                    let n = self.len(u64::from(n))?;
                    let raw = self.take(n)?;
                    let s = self.utf8(raw)?;
                    self.push(Object::Str(s));
                }
                0x8d => {
                    let n = self.u64()?;
                    let n = self.len(n)?;
                    let raw = self.take(n)?;
                    let s = self.utf8(raw)?;
                    self.push(Object::Str(s));
                }
                // SHORT_BINSTRING, BINSTRING: Python 2 str; torch decodes them as text.
                b'U' | b'T' => {
                    let n = if op == b'U' {
                        usize::from(self.u8()?)
                    } else {
                        let n = i32::from_le_bytes(self.array()?);
                        match usize::try_from(n) {
                            Ok(n) => n,
                            Err(_) => return self.err("negative BINSTRING length"),
                        }
                    };
                    let raw = self.take(n)?;
                    let obj = match std::str::from_utf8(raw) {
                        Ok(s) => Object::Str(s.to_owned()),
                        Err(_) => Object::Bytes(raw.to_vec()),
                    };
                    self.push(obj);
                }
                // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
                b'C' => {
                    let n = usize::from(self.u8()?);
                    let raw = self.take(n)?;
                    self.push(Object::Bytes(raw.to_vec()));
                }
                b'B' => {
                    let n = self.u32()?;
                    let n = self.len(u64::from(n))?;
                    let raw = self.take(n)?;
                    self.push(Object::Bytes(raw.to_vec()));
                }
                0x8e | 0x96 => {
                    let n = self.u64()?;
                    let n = self.len(n)?;
                    let raw = self.take(n)?;
                    self.push(Object::Bytes(raw.to_vec()));
                }
                // EMPTY_TUPLE, TUPLE1, TUPLE2, TUPLE3, TUPLE
                b')' => self.push(Object::Tuple(Vec::new())),
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Object::Tuple(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Object::Tuple(items));
                }
                // EMPTY_LIST, LIST, APPEND, APPENDS
                b']' => self.push(Object::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Object::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.append(list, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.append(list, items)?;
                }
                // EMPTY_DICT, DICT, SETITEM, SETITEMS
                b'}' => self.push(Object::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let id = self.alloc(Object::Dict(Vec::new()));
                    self.set_items(id, items)?;
                    self.stack.push(id);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, items)?;
                }
                // EMPTY_SET, ADDITEMS, FROZENSET
                0x8f => self.push(Object::Set(Vec::new())),
                0x90 => {
                    let items = self.pop_mark()?;
                    let set = self.top()?;
                    self.add_to_set(set, items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Object::Set(items));
                }
                // GLOBAL, STACK_GLOBAL
                b'c' => {
                    let module = self.line()?.to_owned();
                    let name = self.line()?.to_owned();
                    self.push(Object::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (self.objects.get(module), self.objects.get(name)) {
                        (Some(Object::Str(m)), Some(Object::Str(n))) => {
                            let obj = Object::Global {
                                module: m.clone(),
                                name: n.clone(),
                            };
                            self.push(obj);
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                // REDUCE, NEWOBJ, NEWOBJ_EX
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let obj = self.call(func, args);
                    self.push(obj);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let obj = self.call(cls, args);
                    self.push(obj);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let obj = self.call(cls, args);
                    self.push(obj);
                }
                // BUILD: keep the state of calls; a dict's state is attributes, not items.
                b'b' => {
                    let new_state = self.pop()?;
                    let target = self.top()?;
                    if let Some(Object::Call { state, .. }) = self.objects.get_mut(target) {
                        *state = Some(new_state);
                    }
                }
                // BINPERSID, PERSID
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Object::Persistent(pid));
                }
                b'P' => {
                    let line = self.line()?.to_owned();
                    let pid = self.alloc(Object::Str(line));
                    self.push(Object::Persistent(pid));
                }
                _ => return self.err(format!("unsupported opcode 0x{op:02x}")),
            }
        }
    }
}
