//! A native form for the simplest CEL expressions, which most rules and triggers are:
//! comparisons of one feature with a literal, bool features, and `!`, `&&`, `||` of those.
//!
//! The form is derived from the CEL AST at compile time and has CEL's semantics on those
//! shapes (numeric comparison across int and double, string equality); anything else, or a
//! value the native form cannot decide (a NaN), is evaluated by CEL. A test runs every library
//! rule both ways on a stream of real feature vectors and requires the same answers.

use std::cmp::Ordering;

use cel::common::ast::{Expr, LiteralValue, operators};
use cel::parser::Expression;

use crate::features::{FEATURES, Features, Kind, feature_index};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    I(i64),
    F(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn parse(func: &str) -> Option<Op> {
        Some(match func {
            operators::LESS => Op::Lt,
            operators::LESS_EQUALS => Op::Le,
            operators::GREATER => Op::Gt,
            operators::GREATER_EQUALS => Op::Ge,
            operators::EQUALS => Op::Eq,
            operators::NOT_EQUALS => Op::Ne,
            _ => return None,
        })
    }

    /// `lit OP feature` as `feature OP' lit`.
    fn flipped(self) -> Op {
        match self {
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            Op::Eq => Op::Eq,
            Op::Ne => Op::Ne,
        }
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
        }
    }
}

/// A compiled simple expression.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fast {
    Const(bool),
    Flag(usize),
    Not(Box<Fast>),
    And(Box<Fast>, Box<Fast>),
    Or(Box<Fast>, Box<Fast>),
    Cmp {
        feature: usize,
        op: Op,
        rhs: Num,
    },
    StrEq {
        feature: usize,
        eq: bool,
        rhs: String,
    },
}

fn literal_num(e: &Expression) -> Option<Num> {
    match &e.expr {
        Expr::Literal(LiteralValue::Int(i)) => Some(Num::I(*i.inner())),
        Expr::Literal(LiteralValue::Double(d)) => Some(Num::F(*d.inner())),
        Expr::Literal(LiteralValue::UInt(u)) => i64::try_from(*u.inner()).ok().map(Num::I),
        Expr::Call(c) if c.func_name == operators::NEGATE && c.args.len() == 1 => {
            match literal_num(&c.args[0])? {
                Num::I(i) => i.checked_neg().map(Num::I),
                Num::F(f) => Some(Num::F(-f)),
            }
        }
        _ => None,
    }
}

fn ident(e: &Expression) -> Option<(usize, Kind)> {
    match &e.expr {
        Expr::Ident(name) => {
            let i = feature_index(name)?;
            Some((i, FEATURES.get(i)?.kind))
        }
        _ => None,
    }
}

/// The native form of `e`, if it has one.
pub(crate) fn compile(e: &Expression) -> Option<Fast> {
    match &e.expr {
        Expr::Literal(LiteralValue::Boolean(b)) => Some(Fast::Const(*b.inner())),
        Expr::Ident(_) => match ident(e)? {
            (i, Kind::Bool) => Some(Fast::Flag(i)),
            _ => None,
        },
        Expr::Call(c) if c.target.is_none() => {
            if c.func_name == operators::LOGICAL_NOT && c.args.len() == 1 {
                return Some(Fast::Not(Box::new(compile(&c.args[0])?)));
            }
            if c.args.len() != 2 {
                return None;
            }
            let (a, b) = (&c.args[0], &c.args[1]);
            match c.func_name.as_str() {
                operators::LOGICAL_AND => {
                    Some(Fast::And(Box::new(compile(a)?), Box::new(compile(b)?)))
                }
                operators::LOGICAL_OR => {
                    Some(Fast::Or(Box::new(compile(a)?), Box::new(compile(b)?)))
                }
                f => {
                    let op = Op::parse(f)?;
                    compare(a, op, b).or_else(|| compare(b, op.flipped(), a))
                }
            }
        }
        _ => None,
    }
}

fn compare(feature: &Expression, op: Op, lit: &Expression) -> Option<Fast> {
    let (i, kind) = ident(feature)?;
    match kind {
        Kind::Int | Kind::Float => Some(Fast::Cmp {
            feature: i,
            op,
            rhs: literal_num(lit)?,
        }),
        Kind::Str if matches!(op, Op::Eq | Op::Ne) => match &lit.expr {
            Expr::Literal(LiteralValue::String(s)) => Some(Fast::StrEq {
                feature: i,
                eq: op == Op::Eq,
                rhs: s.inner().to_owned(),
            }),
            _ => None,
        },
        _ => None,
    }
}

impl Fast {
    /// The value, or `None` when CEL must decide (a NaN in a comparison).
    pub(crate) fn eval(&self, f: &Features<'_>) -> Option<bool> {
        match self {
            Fast::Const(b) => Some(*b),
            Fast::Flag(i) => f.flag_at(*i),
            Fast::Not(x) => x.eval(f).map(|b| !b),
            // Both sides are always evaluated to tell "CEL must decide" apart; they are cheap.
            Fast::And(a, b) => {
                let (x, y) = (a.eval(f)?, b.eval(f)?);
                Some(x && y)
            }
            Fast::Or(a, b) => {
                let (x, y) = (a.eval(f)?, b.eval(f)?);
                Some(x || y)
            }
            Fast::Cmp { feature, op, rhs } => {
                let o = match (f.num_at(*feature)?, rhs) {
                    (Num::I(a), Num::I(b)) => a.cmp(b),
                    (Num::I(a), Num::F(b)) => (a as f64).partial_cmp(b)?,
                    (Num::F(a), Num::I(b)) => a.partial_cmp(&(*b as f64))?,
                    (Num::F(a), Num::F(b)) => a.partial_cmp(b)?,
                };
                Some(op.holds(o))
            }
            Fast::StrEq { feature, eq, rhs } => Some((f.str_at(*feature)? == rhs) == *eq),
        }
    }
}

impl Features<'_> {
    fn num_at(&self, i: usize) -> Option<Num> {
        match FEATURES.get(i)?.kind {
            Kind::Int => self.int_at(i).map(Num::I),
            Kind::Float => self.float_at(i).map(Num::F),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureStore;
    use crate::rules::{bundled_library_dir, load_library};
    use cel::Program;

    #[test]
    fn shapes_that_compile_natively() {
        let yes = [
            "amount_fen >= 100000",
            "100000 <= amount_fen",
            "payer_amount_z > 3.0",
            "payer_new && has_payer && amount_fen > -5",
            "!(is_night || kind == 'REFUND')",
            "true",
        ];
        for src in yes {
            let p = Program::compile(src).unwrap();
            assert!(compile(p.expression()).is_some(), "{src}");
        }
        let no = [
            "user_agent.contains('x')",
            "device_sum_1h < 500 * device_cnt_1h",
            "amount_fen > payer_sum_30d",
            "unknown_name > 3",
        ];
        for src in no {
            let p = Program::compile(src).unwrap();
            assert!(compile(p.expression()).is_none(), "{src}");
        }
    }

    /// Every native form in the library gives CEL's answer on real feature vectors.
    #[test]
    fn native_forms_agree_with_cel_on_the_golden_stream() {
        use crate::synth::{StreamConfig, generate};
        let sources = load_library(&bundled_library_dir()).unwrap();
        let set = crate::rules::compile_rules(&sources, 1).unwrap();
        let stream = generate(&StreamConfig::GOLDEN);
        let store = FeatureStore::new(
            crate::features::Keyer::new([3; 16]),
            time::macros::offset!(+8),
            &crate::features::MemoryConfig::default(),
        );
        let lists = crate::lists::Lists::default();
        let mut compared = 0usize;
        for (n, l) in stream.iter().enumerate() {
            let mut f = store.compute(&l.event, &lists);
            // Sweep the model score across the bands the model rules use.
            f.set_model_score(Some((n % 101) as f64 / 100.0));
            compared += set.compare_fast_with_cel(&f);
            store.record(&l.event, false);
        }
        assert!(compared > 100_000, "only {compared} comparisons");
    }
}
