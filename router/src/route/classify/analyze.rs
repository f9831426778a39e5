//! The cache-miss path: PostgreSQL's parse tree (libpg_query) to a
//! [`Decision`].
//!
//! Statement kinds are matched on the typed tree. Whether a read contains a
//! write somewhere below its top (a locking clause or `INTO` in any
//! subquery, a data-modifying CTE, a writing function called inside
//! `ARRAY[...]`, a `CASE`, a window, ...) is answered by [`super::walk`],
//! which visits every node.

use pg_query::protobuf::{a_const, AConst, Node, TransactionStmtKind, VariableSetKind};
use pg_query::NodeEnum;

use super::{walk, Access, Decision, RoleSetting, Target, TxnKind};

/// The setting that pins a session (`SET pgdog.role = ...`).
const ROLE_SETTING: &str = "pgdog.role";

/// `DECLARE ... WITH HOLD`: the cursor outlives the transaction.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// Functions that write or must see the primary session, by exact name.
const WRITERS: &[&str] =
    &["nextval", "setval", "currval", "lastval", "lowrite", "pg_notify", "txid_current", "pg_current_xact_id"];

/// ... and by prefix.
const WRITER_PREFIXES: &[&str] = &["pg_advisory_", "pg_try_advisory_", "lo_"];

/// The decision for `sql`, and whether it may be cached under its shape
/// (false when a literal's value decides, as in `SET pgdog.role = 'x'`).
pub(super) fn analyze(sql: &[u8], writers: &[String]) -> (Decision, bool) {
    let Ok(text) = std::str::from_utf8(sql) else {
        return (Decision::of(Access::Unknown), true);
    };
    let Ok(parsed) = pg_query::parse(text, 0) else {
        return (Decision::of(Access::Unknown), true);
    };
    let cx = Cx { writers };
    let mut d = Decision::of(Access::Any);
    let mut cacheable = true;
    for raw in &parsed.protobuf.stmts {
        let Some(stmt) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else { continue };
        let s = cx.statement(stmt);
        d.access = d.access.max(s.access);
        cacheable &= s.cacheable;
        if s.ends_txn {
            d.ends_txn = true;
            d.begins = None;
        }
        if s.begins.is_some() {
            d.begins = s.begins;
        }
        if let Some(kind) = s.txn_access {
            // Right after a BEGIN of this string, it shapes that transaction.
            match d.begins.as_mut() {
                Some(b) => *b = kind,
                None => d.txn_access = Some(kind),
            }
        }
        if s.role.is_some() {
            d.role = s.role;
        }
    }
    (d, cacheable)
}

/// One statement's part of the decision.
struct Stmt {
    access: Access,
    begins: Option<TxnKind>,
    ends_txn: bool,
    txn_access: Option<TxnKind>,
    role: Option<RoleSetting>,
    cacheable: bool,
}

impl Stmt {
    fn of(access: Access) -> Stmt {
        Stmt { access, begins: None, ends_txn: false, txn_access: None, role: None, cacheable: true }
    }
}

struct Cx<'a> {
    writers: &'a [String],
}

impl Cx<'_> {
    fn statement(&self, stmt: &NodeEnum) -> Stmt {
        match stmt {
            NodeEnum::SelectStmt(_) => Stmt::of(self.query(stmt)),
            NodeEnum::InsertStmt(_) | NodeEnum::UpdateStmt(_) | NodeEnum::DeleteStmt(_) | NodeEnum::MergeStmt(_) => {
                Stmt::of(Access::Write)
            }
            NodeEnum::ExplainStmt(e) => Stmt::of(self.inner(e.query.as_deref())),
            NodeEnum::CopyStmt(c) => Stmt::of(if c.is_from || c.is_program || !c.filename.is_empty() {
                Access::Write
            } else if c.query.is_some() {
                self.inner(c.query.as_deref())
            } else {
                Access::Read
            }),
            NodeEnum::DeclareCursorStmt(c) if c.options & CURSOR_OPT_HOLD == 0 => {
                Stmt::of(self.inner(c.query.as_deref()))
            }
            NodeEnum::VariableShowStmt(_) => Stmt::of(Access::Read),
            NodeEnum::VariableSetStmt(v) => set(v),
            NodeEnum::TransactionStmt(t) => transaction(t),
            NodeEnum::DiscardStmt(d) => Stmt {
                role: (d.target == pg_query::protobuf::DiscardMode::DiscardAll as i32).then_some(RoleSetting::Auto),
                ..Stmt::of(Access::Any)
            },
            NodeEnum::DeallocateStmt(_)
            | NodeEnum::FetchStmt(_)
            | NodeEnum::ClosePortalStmt(_)
            | NodeEnum::ConstraintsSetStmt(_) => Stmt::of(Access::Any),
            NodeEnum::PrepareStmt(_) | NodeEnum::ExecuteStmt(_) => Stmt::of(Access::Unknown),
            _ => Stmt::of(Access::Write),
        }
    }

    /// The access of a statement nested in EXPLAIN, COPY or DECLARE.
    fn inner(&self, query: Option<&Node>) -> Access {
        match query.and_then(|n| n.node.as_ref()) {
            Some(q) => match self.statement(q).access {
                Access::Any => Access::Read,
                a => a,
            },
            None => Access::Unknown,
        }
    }

    /// A SELECT (or VALUES, TABLE): a read unless something in its tree writes.
    fn query(&self, stmt: &NodeEnum) -> Access {
        let NodeEnum::SelectStmt(select) = stmt else { return Access::Write };
        if walk::writes(select.as_ref(), &|names| self.writing_function(names)) {
            Access::Write
        } else {
            Access::Read
        }
    }

    /// Whether a function, given its name parts (`["pg_catalog", "nextval"]`),
    /// is a built-in or configured writer.
    fn writing_function(&self, names: &[String]) -> bool {
        let Some(last) = names.last() else { return false };
        let last = last.to_ascii_lowercase();
        if WRITERS.contains(&last.as_str()) || WRITER_PREFIXES.iter().any(|p| last.starts_with(p)) {
            return true;
        }
        if !self.writers.iter().any(|w| w.contains('.')) {
            return self.writers.contains(&last);
        }
        let qualified = names.join(".").to_ascii_lowercase();
        self.writers.iter().any(|w| if w.contains('.') { *w == qualified } else { *w == last })
    }
}

fn transaction(t: &pg_query::protobuf::TransactionStmt) -> Stmt {
    let kind = TransactionStmtKind::try_from(t.kind).unwrap_or(TransactionStmtKind::Undefined);
    match kind {
        TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart => {
            Stmt { begins: Some(txn_kind(&t.options).unwrap_or(TxnKind::ReadWrite)), ..Stmt::of(Access::Any) }
        }
        TransactionStmtKind::TransStmtCommit | TransactionStmtKind::TransStmtRollback => {
            Stmt { ends_txn: !t.chain, ..Stmt::of(Access::Any) }
        }
        TransactionStmtKind::TransStmtPrepare => Stmt { ends_txn: true, ..Stmt::of(Access::Any) },
        TransactionStmtKind::TransStmtCommitPrepared | TransactionStmtKind::TransStmtRollbackPrepared => {
            Stmt::of(Access::Write)
        }
        _ => Stmt::of(Access::Any),
    }
}

/// The access mode among transaction options (`READ ONLY` is the option
/// `transaction_read_only` with 1).
fn txn_kind(options: &[Node]) -> Option<TxnKind> {
    options.iter().rev().find_map(|o| match o.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname == "transaction_read_only" => {
            let value = d.arg.as_ref().and_then(|a| a.node.as_ref()).and_then(|n| match n {
                NodeEnum::AConst(c) => const_bool(c),
                _ => None,
            });
            value.map(|ro| if ro { TxnKind::ReadOnly } else { TxnKind::ReadWrite })
        }
        _ => None,
    })
}

fn set(v: &pg_query::protobuf::VariableSetStmt) -> Stmt {
    let kind = VariableSetKind::try_from(v.kind).unwrap_or(VariableSetKind::Undefined);
    let any = Stmt::of(Access::Any);
    match kind {
        VariableSetKind::VarResetAll => Stmt { role: Some(RoleSetting::Auto), ..any },
        VariableSetKind::VarSetMulti if v.name == "TRANSACTION" => Stmt { txn_access: txn_kind(&v.args), ..any },
        _ if v.name.eq_ignore_ascii_case(ROLE_SETTING) => {
            let role = match kind {
                VariableSetKind::VarSetValue => match v.args.as_slice() {
                    [arg] => role_value(arg),
                    _ => RoleSetting::Invalid,
                },
                _ => RoleSetting::Auto,
            };
            Stmt { role: Some(role), cacheable: false, ..any }
        }
        VariableSetKind::VarSetValue if v.name.eq_ignore_ascii_case("transaction_read_only") => {
            let value = match v.args.as_slice() {
                [Node { node: Some(NodeEnum::AConst(c)) }] => const_bool(c),
                _ => None,
            };
            let txn_access = value.map(|ro| if ro { TxnKind::ReadOnly } else { TxnKind::ReadWrite });
            Stmt { txn_access, cacheable: false, ..any }
        }
        _ => any,
    }
}

fn role_value(arg: &Node) -> RoleSetting {
    let Some(NodeEnum::AConst(AConst { val: Some(a_const::Val::Sval(s)), .. })) = arg.node.as_ref() else {
        return RoleSetting::Invalid;
    };
    match s.sval.to_ascii_lowercase().as_str() {
        "primary" => RoleSetting::Pin(Target::Primary),
        "replica" => RoleSetting::Pin(Target::Replica),
        "auto" => RoleSetting::Auto,
        _ => RoleSetting::Invalid,
    }
}

/// A boolean as PostgreSQL's `parse_bool` reads it: 1/0, or a unique prefix
/// of true/false/yes/no, or on/off.
fn const_bool(c: &AConst) -> Option<bool> {
    match c.val.as_ref()? {
        a_const::Val::Ival(i) => Some(i.ival != 0),
        a_const::Val::Boolval(b) => Some(b.boolval),
        a_const::Val::Sval(s) => {
            let v = s.sval.trim().to_ascii_lowercase();
            let prefix = |word: &str| !v.is_empty() && word.starts_with(v.as_str());
            match v.as_str() {
                "on" | "1" => Some(true),
                "off" | "of" | "0" => Some(false),
                "o" => None,
                _ if prefix("true") || prefix("yes") => Some(true),
                _ if prefix("false") || prefix("no") => Some(false),
                _ => None,
            }
        }
        _ => None,
    }
}
