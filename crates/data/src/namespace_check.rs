//! A static check that a chat template can never make a `namespace` contain itself.
//!
//! Namespaces are the only mutable values in minijinja, and `{% set ns.attr = value %}` the
//! only way to mutate one. A template that stores a namespace inside a namespace
//! (`{% set ns.n = ns %}`) can build a cycle; printing, comparing or serialising it then
//! recurses inside minijinja until the stack overflows, which aborts the process rather
//! than failing the render. So a template is refused when any such assignment may store a
//! value that is, or contains, a namespace.
//!
//! The analysis is flow- and scope-insensitive and errs on the side of refusal: every name
//! carries two facts, "may be a namespace" and "may contain one", gathered from all the
//! places the template binds it (`set`, `for`, `with`, macro parameters), repeated until
//! nothing changes. Attribute reads of a namespace are namespace-free, since no assignment
//! ever stores one there (that is what is being checked), which keeps the common
//! `{% set ns.n = ns.n + 1 %}` accepted.

use minijinja::machinery::ast::{self, CallArg, Expr, Stmt};
use minijinja::machinery::{parse, WhitespaceConfig};
use std::collections::HashMap;

/// What a value may hold: itself a namespace, or a namespace somewhere inside.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Taint {
    is_ns: bool,
    holds_ns: bool,
}

impl Taint {
    const ALL: Taint = Taint {
        is_ns: true,
        holds_ns: true,
    };
    fn any(self) -> bool {
        self.is_ns || self.holds_ns
    }
    fn or(self, o: Taint) -> Taint {
        Taint {
            is_ns: self.is_ns || o.is_ns,
            holds_ns: self.holds_ns || o.holds_ns,
        }
    }
    /// An element or attribute of a value with this taint.
    fn element(self) -> Taint {
        Taint {
            is_ns: self.holds_ns,
            holds_ns: self.holds_ns,
        }
    }
    /// A container built from a value with this taint.
    fn container(self) -> Taint {
        Taint {
            is_ns: false,
            holds_ns: self.any(),
        }
    }
}

#[derive(Default)]
struct Analysis<'a> {
    names: HashMap<&'a str, Taint>,
    /// Some call passes a value that may hold a namespace: macro parameters may be one.
    tainted_call: bool,
    changed: bool,
    /// The first assignment into a namespace that may store one (line).
    violation: Option<usize>,
}

impl<'a> Analysis<'a> {
    fn bind(&mut self, name: &'a str, t: Taint) {
        let old = self.names.get(name).copied().unwrap_or_default();
        let new = old.or(t);
        if new != old {
            self.names.insert(name, new);
            self.changed = true;
        }
    }

    fn bind_target(&mut self, target: &Expr<'a>, t: Taint, line: usize) {
        match target {
            Expr::Var(v) => self.bind(v.id, t),
            // unpacking: every name gets an element
            Expr::List(l) => {
                for item in &l.items {
                    self.bind_target(item, t.element(), line);
                }
            }
            // `{% set ns.attr = value %}`: the one mutation
            Expr::GetAttr(_) | Expr::GetItem(_) if t.any() && self.violation.is_none() => {
                self.violation = Some(line);
            }
            _ => {}
        }
    }

    fn args(&mut self, args: &[CallArg<'a>]) -> Taint {
        let mut t = Taint::default();
        for a in args {
            let e = match a {
                CallArg::Pos(e)
                | CallArg::Kwarg(_, e)
                | CallArg::PosSplat(e)
                | CallArg::KwargSplat(e) => e,
            };
            t = t.or(self.expr(e));
        }
        t
    }

    fn expr(&mut self, e: &Expr<'a>) -> Taint {
        match e {
            // the constructor itself, as a value, could be called under another name
            Expr::Var(v) if v.id == "namespace" => Taint::ALL,
            Expr::Var(v) => self.names.get(v.id).copied().unwrap_or_default(),
            Expr::Const(_) => Taint::default(),
            Expr::Slice(s) => {
                for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(part);
                }
                self.expr(&s.expr).element().container()
            }
            Expr::UnaryOp(u) => {
                self.expr(&u.expr);
                Taint::default()
            }
            Expr::BinOp(b) => {
                let (l, r) = (self.expr(&b.left), self.expr(&b.right));
                match b.op {
                    // `a or b` / `a and b` yield an operand
                    ast::BinOpKind::ScAnd | ast::BinOpKind::ScOr => l.or(r),
                    // list concatenation and friends build a new container
                    _ => l.or(r).container(),
                }
            }
            Expr::Compare(c) => {
                self.expr(&c.expr);
                for op in &c.ops {
                    self.expr(&op.expr);
                }
                Taint::default()
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                let t = self.expr(&i.true_expr);
                match &i.false_expr {
                    Some(f) => t.or(self.expr(f)),
                    None => t,
                }
            }
            Expr::Filter(f) => {
                let mut t = self.args(&f.args);
                if let Some(x) = &f.expr {
                    t = t.or(self.expr(x));
                }
                if t.any() {
                    Taint::ALL
                } else {
                    Taint::default()
                }
            }
            Expr::Test(t) => {
                self.expr(&t.expr);
                self.args(&t.args);
                Taint::default()
            }
            Expr::GetAttr(g) => self.expr(&g.expr).element(),
            Expr::GetItem(g) => {
                self.expr(&g.subscript_expr);
                self.expr(&g.expr).element()
            }
            Expr::Call(c) => self.call(c),
            Expr::List(l) => {
                let mut t = Taint::default();
                for item in &l.items {
                    t = t.or(self.expr(item));
                }
                t.container()
            }
            Expr::Map(m) => {
                let mut t = Taint::default();
                for x in m.keys.iter().chain(&m.values) {
                    t = t.or(self.expr(x));
                }
                t.container()
            }
        }
    }

    fn call(&mut self, c: &ast::Call<'a>) -> Taint {
        let args = self.args(&c.args);
        if args.any() {
            self.tainted_call = true;
        }
        if let Expr::Var(v) = &c.expr {
            if v.id == "namespace" {
                // a new namespace, holding what its keyword arguments hold
                return Taint {
                    is_ns: true,
                    holds_ns: args.any(),
                };
            }
        }
        let callee = self.expr(&c.expr);
        if callee.any() || args.any() {
            Taint::ALL
        } else {
            Taint::default()
        }
    }

    fn macro_decl(&mut self, m: &ast::Macro<'a>) {
        let passed = if self.tainted_call {
            Taint::ALL
        } else {
            Taint::default()
        };
        for name in ["varargs", "kwargs"] {
            self.bind(name, passed);
        }
        // defaults line up with the last parameters
        let first_default = m.args.len().saturating_sub(m.defaults.len());
        for (i, arg) in m.args.iter().enumerate() {
            let mut t = passed;
            if i >= first_default {
                t = t.or(self.expr(&m.defaults[i - first_default]));
            }
            self.bind_target(arg, t, 0);
        }
        self.stmts(&m.body);
    }

    fn stmts(&mut self, body: &[Stmt<'a>]) {
        for s in body {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &Stmt<'a>) {
        match s {
            Stmt::Template(t) => self.stmts(&t.children),
            Stmt::EmitExpr(e) => {
                self.expr(&e.expr);
            }
            Stmt::EmitRaw(_) | Stmt::Continue(_) | Stmt::Break(_) => {}
            Stmt::ForLoop(f) => {
                let items = self.expr(&f.iter);
                self.bind_target(&f.target, items.element(), f.span().start_line as usize);
                // `loop.previtem` / `loop.nextitem` hand out elements
                self.bind("loop", items.element().container());
                if let Some(x) = &f.filter_expr {
                    self.expr(x);
                }
                self.stmts(&f.body);
                self.stmts(&f.else_body);
            }
            Stmt::IfCond(i) => {
                self.expr(&i.expr);
                self.stmts(&i.true_body);
                self.stmts(&i.false_body);
            }
            Stmt::WithBlock(w) => {
                for (target, value) in &w.assignments {
                    let t = self.expr(value);
                    self.bind_target(target, t, w.span().start_line as usize);
                }
                self.stmts(&w.body);
            }
            Stmt::Set(set) => {
                let t = self.expr(&set.expr);
                self.bind_target(&set.target, t, set.span().start_line as usize);
            }
            // a string
            Stmt::SetBlock(b) => {
                if let Some(f) = &b.filter {
                    self.expr(f);
                }
                self.stmts(&b.body);
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.stmts(&a.body);
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.stmts(&f.body);
            }
            Stmt::Block(b) => self.stmts(&b.body),
            Stmt::Macro(m) => self.macro_decl(m),
            Stmt::CallBlock(c) => {
                self.call(&c.call);
                self.macro_decl(&c.macro_decl);
            }
            Stmt::Do(d) => {
                self.call(&d.call);
            }
            // a chat template has no loader: these fail when rendered
            Stmt::Import(_) | Stmt::FromImport(_) | Stmt::Extends(_) | Stmt::Include(_) => {}
        }
    }
}

/// Refuse a template that may store a namespace inside a namespace, with the line of the
/// first such assignment. Templates that do not parse are left to minijinja's own error.
pub fn check(source: &str) -> Result<(), String> {
    let Ok(ast) = parse(
        source,
        "chat",
        Default::default(),
        WhitespaceConfig::default(),
    ) else {
        return Ok(());
    };
    let mut a = Analysis::default();
    // each pass can only add facts (two per name, one for calls), so this ends; the bound
    // is a guard
    for _ in 0..10_000 {
        a.changed = false;
        a.violation = None;
        let before = a.tainted_call;
        a.stmt(&ast);
        if !a.changed && before == a.tainted_call {
            break;
        }
    }
    match a.violation {
        None => Ok(()),
        Some(line) => Err(format!(
            "line {line}: `{{% set <namespace>.<attribute> = … %}}` may store a namespace inside \
             a namespace, which can make it contain itself; such templates are not supported"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn real_template_idioms_pass() {
        for ok in [
            "{% set ns = namespace(n=0, found=false) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.found = true %}{% endfor %}{{ ns.n }}",
            "{% set ns = namespace(system='') %}{% for m in messages %}{% if m.role == 'system' %}{% set ns.system = m['content'] %}{% endif %}{% endfor %}",
            "{% set ns = namespace(tools=[]) %}{% set ns.tools = tools %}{% set ns.last = messages[-1] %}",
            "{% macro f(x, y=1) %}{{ x }}{% endmacro %}{% set ns = namespace(a=1) %}{% set ns.a = f(ns.a) %}",
            "{% set ns = namespace(i=0) %}{% set ns.i = ns.i | int %}{% set ns.s = ns.s ~ 'x' %}",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_namespace_stored_in_a_namespace_is_refused() {
        for (bad, line) in [
            ("{% set ns = namespace(n=0) %}{% set ns.n = ns %}{{ ns.n }}", 1),
            ("{% set a = namespace() %}\n{% set b = namespace() %}\n{% set a.x = [b] %}", 3),
            ("{% set ns = namespace() %}{% set alias = ns %}{% set ns.me = alias %}", 1),
            ("{% set ns = namespace() %}{% for x in [ns] %}{% set ns.me = x %}{% endfor %}", 1),
            ("{% set ns = namespace() %}{% set ns.me = ns if true else 1 %}", 1),
            ("{% set mk = namespace %}{% set ns = mk() %}{% set ns.me = ns %}", 1),
            ("{% macro keep(x) %}{% set ns.me = x %}{% endmacro %}{% set ns = namespace() %}{{ keep(ns) }}", 1),
            ("{% set ns = namespace() %}{% set ns.me = [ns] | first %}", 1),
            ("{% set ns = namespace() %}{% set ns.d = {'k': ns} %}", 1),
            ("{% set ns = namespace() %}{% set l = [[ns]] %}{% set ns.me = l[0][0] %}", 1),
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.starts_with(&format!("line {line}:")), "{bad}: {e}");
        }
    }
}
