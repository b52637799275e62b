//! Expressions parsed from LaTeX answers, their evaluation, and the identity test between two of
//! them.
//!
//! Two expressions are equal when they evaluate to [`close`] values: once when neither has a
//! variable, else at [`POINTS`] fixed pseudo-random points (every variable drawn in [0.5, 2]); a
//! point where either side is undefined (`\sqrt{x-1}` at 0.7) is skipped, and at least
//! [`MIN_DEFINED_POINTS`] must remain. For polynomials of degree `d` a false "equal" needs all points
//! to be roots of a nonzero polynomial, which fixed generic points make vanishingly unlikely for the
//! answers graded here; the tolerance is [`crate::value::RELATIVE_TOLERANCE`].

use std::collections::BTreeSet;

use num_rational::BigRational;

use crate::value::{close, Value};

/// Evaluation points of the identity test.
pub const POINTS: usize = 8;

/// Points at which both sides must be defined for an identity to hold.
pub const MIN_DEFINED_POINTS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Exp,
    Abs,
}

impl Func {
    /// The function a LaTeX command names (`\sin`, `\arcsin`, `\ln`, `\log` is natural as in sympy).
    pub fn from_command(name: &str) -> Option<Func> {
        Some(match name {
            "sin" => Func::Sin,
            "cos" => Func::Cos,
            "tan" | "tg" => Func::Tan,
            "sec" => Func::Sec,
            "csc" | "cosec" => Func::Csc,
            "cot" | "ctg" => Func::Cot,
            "arcsin" | "asin" => Func::Asin,
            "arccos" | "acos" => Func::Acos,
            "arctan" | "atan" => Func::Atan,
            "sinh" => Func::Sinh,
            "cosh" => Func::Cosh,
            "tanh" => Func::Tanh,
            "ln" | "log" => Func::Ln,
            "exp" => Func::Exp,
            _ => return None,
        })
    }

    /// `\sin^{-1}` is `\arcsin`.
    pub fn inverse(self) -> Option<Func> {
        Some(match self {
            Func::Sin => Func::Asin,
            Func::Cos => Func::Acos,
            Func::Tan => Func::Atan,
            _ => return None,
        })
    }

    fn apply(self, x: Value) -> Option<Value> {
        if self == Func::Abs {
            return match x {
                Value::Exact(r) => Some(Value::Exact(num_traits::Signed::abs(&r))),
                Value::Infinite(_) => Some(Value::Infinite(true)),
                Value::Approx(z) => Some(Value::real(z.norm())),
            };
        }
        let z = x.complex()?;
        let one = num_complex::Complex64::new(1.0, 0.0);
        let out = match self {
            Func::Sin => z.sin(),
            Func::Cos => z.cos(),
            Func::Tan => z.tan(),
            Func::Sec => one / z.cos(),
            Func::Csc => one / z.sin(),
            Func::Cot => one / z.tan(),
            Func::Asin => z.asin(),
            Func::Acos => z.acos(),
            Func::Atan => z.atan(),
            Func::Sinh => z.sinh(),
            Func::Cosh => z.cosh(),
            Func::Tanh => z.tanh(),
            Func::Ln if z.norm() == 0.0 => return None,
            Func::Ln => z.ln(),
            Func::Exp => z.exp(),
            Func::Abs => unreachable!("handled above"),
        };
        Some(Value::Approx(out))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Num(BigRational),
    Var(String),
    Pi,
    E,
    I,
    Infinity,
    Neg(Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    /// `a ± b` (and `a ∓ b`, the same pair of values); a lone `±b` has `a = 0`.
    PlusMinus(Box<Expr>, Box<Expr>),
    Func(Func, Box<Expr>),
    /// `\log_b x`.
    Log(Box<Expr>, Box<Expr>),
    /// `\sqrt[n]{x}`: the index, then the radicand.
    Root(Box<Expr>, Box<Expr>),
    Factorial(Box<Expr>),
    Binomial(Box<Expr>, Box<Expr>),
}

/// Most `±` signs expanded into their sign combinations.
const MAX_PLUS_MINUS: usize = 4;

impl Expr {
    pub fn integer(n: i64) -> Expr {
        Expr::Num(BigRational::from_integer(n.into()))
    }

    pub fn boxed(self) -> Box<Expr> {
        Box::new(self)
    }

    /// The sub-expressions this one is built from (none, one or two).
    fn children(&self) -> impl Iterator<Item = &Expr> {
        let (a, b): (Option<&Expr>, Option<&Expr>) = match self {
            Expr::Num(_) | Expr::Var(_) | Expr::Pi | Expr::E | Expr::I | Expr::Infinity => (None, None),
            Expr::Neg(a) | Expr::Func(_, a) | Expr::Factorial(a) => (Some(a), None),
            Expr::Add(a, b)
            | Expr::Sub(a, b)
            | Expr::Mul(a, b)
            | Expr::Div(a, b)
            | Expr::Pow(a, b)
            | Expr::PlusMinus(a, b)
            | Expr::Log(a, b)
            | Expr::Root(a, b)
            | Expr::Binomial(a, b) => (Some(a), Some(b)),
        };
        a.into_iter().chain(b)
    }

    /// The names of the free variables.
    pub fn variables(&self, out: &mut BTreeSet<String>) {
        if let Expr::Var(name) = self {
            out.insert(name.clone());
        }
        self.children().for_each(|child| child.variables(out));
    }

    fn plus_minus_count(&self) -> usize {
        let own = usize::from(matches!(self, Expr::PlusMinus(..)));
        own + self.children().map(Expr::plus_minus_count).sum::<usize>()
    }

    /// The expressions a `±` stands for (`2 ± √3` is `2 + √3` and `2 - √3`); itself when it has none,
    /// and `None` when it has more than [`MAX_PLUS_MINUS`].
    pub fn branches(&self) -> Option<Vec<Expr>> {
        let count = self.plus_minus_count();
        if count > MAX_PLUS_MINUS {
            return None;
        }
        Some((0..1usize << count).map(|signs| self.with_signs(&mut (signs, 0))).collect())
    }

    /// This expression with each `±` replaced by the sign the next bit of `signs.0` picks.
    fn with_signs(&self, signs: &mut (usize, usize)) -> Expr {
        let mut go = |e: &Expr| e.with_signs(signs).boxed();
        match self {
            Expr::PlusMinus(a, b) => {
                let (a, b) = (go(a), go(b));
                let minus = signs.0 >> signs.1 & 1 == 1;
                signs.1 += 1;
                if minus {
                    Expr::Sub(a, b)
                } else {
                    Expr::Add(a, b)
                }
            }
            Expr::Num(_) | Expr::Var(_) | Expr::Pi | Expr::E | Expr::I | Expr::Infinity => self.clone(),
            Expr::Neg(a) => Expr::Neg(go(a)),
            Expr::Func(f, a) => Expr::Func(*f, go(a)),
            Expr::Factorial(a) => Expr::Factorial(go(a)),
            Expr::Add(a, b) => Expr::Add(go(a), go(b)),
            Expr::Sub(a, b) => Expr::Sub(go(a), go(b)),
            Expr::Mul(a, b) => Expr::Mul(go(a), go(b)),
            Expr::Div(a, b) => Expr::Div(go(a), go(b)),
            Expr::Pow(a, b) => Expr::Pow(go(a), go(b)),
            Expr::Log(a, b) => Expr::Log(go(a), go(b)),
            Expr::Root(a, b) => Expr::Root(go(a), go(b)),
            Expr::Binomial(a, b) => Expr::Binomial(go(a), go(b)),
        }
    }

    /// The value with each variable taking `value_of(name)`; `None` where undefined (division by
    /// zero, `0!` of a non-integer, a `±` left unexpanded).
    pub fn eval(&self, value_of: &dyn Fn(&str) -> f64) -> Option<Value> {
        let eval = |e: &Expr| e.eval(value_of);
        let value = match self {
            Expr::Num(r) => Value::exact(r.clone()),
            Expr::Var(name) => Value::real(value_of(name)),
            Expr::Pi => Value::real(std::f64::consts::PI),
            Expr::E => Value::real(std::f64::consts::E),
            Expr::I => Value::Approx(num_complex::Complex64::new(0.0, 1.0)),
            Expr::Infinity => Value::Infinite(true),
            Expr::Neg(a) => eval(a)?.negate(),
            Expr::Add(a, b) => eval(a)?.plus(eval(b)?)?,
            Expr::Sub(a, b) => eval(a)?.minus(eval(b)?)?,
            Expr::Mul(a, b) => eval(a)?.times(eval(b)?)?,
            Expr::Div(a, b) => eval(a)?.over(eval(b)?)?,
            Expr::Pow(a, b) => eval(a)?.pow(eval(b)?)?,
            Expr::PlusMinus(..) => return None,
            Expr::Func(f, a) => f.apply(eval(a)?)?,
            Expr::Log(base, x) => {
                let ln = |v: Value| Func::Ln.apply(v);
                ln(eval(x)?)?.over(ln(eval(base)?)?)?
            }
            Expr::Root(index, x) => eval(x)?.pow(Value::integer(1).over(eval(index)?)?)?,
            Expr::Factorial(a) => factorial(&eval(a)?)?,
            Expr::Binomial(n, k) => {
                let (n, k) = (eval(n)?, eval(k)?);
                let difference = n.clone().minus(k.clone())?;
                factorial(&n)?.over(factorial(&k)?.times(factorial(&difference)?)?)?
            }
        };
        value.is_finite_or_infinite().then_some(value)
    }
}

impl Value {
    fn is_finite_or_infinite(&self) -> bool {
        self.is_finite() || matches!(self, Value::Infinite(_))
    }
}

/// `n!` for a non-negative integer up to 1000 (exact), else undefined.
fn factorial(n: &Value) -> Option<Value> {
    let n = n.as_integer()?;
    let n: u32 = num_traits::ToPrimitive::to_u32(&n).filter(|&n| n <= 1000)?;
    let product = (1..=n).fold(num_bigint::BigInt::from(1), |acc, k| acc * k);
    Some(Value::exact(BigRational::from_integer(product)))
}

/// The value of variable number `variable` at identity-test point `point`: a low-discrepancy
/// sequence in [0.5, 2], different for every variable.
fn point_value(point: usize, variable: usize) -> f64 {
    let golden = 0.618_033_988_749_895;
    let silver = 0.414_213_562_373_095_1;
    let t = ((point + 1) as f64 * golden + (variable + 1) as f64 * silver * 1.7).fract();
    0.5 + 1.5 * t
}

/// Whether `a` and `b` denote the same number or the same function of their variables.
pub fn same_value(a: &Expr, b: &Expr) -> bool {
    if a == b {
        return true;
    }
    let mut names = BTreeSet::new();
    a.variables(&mut names);
    b.variables(&mut names);
    let names: Vec<String> = names.into_iter().collect();
    if names.is_empty() {
        return match (a.eval(&|_| f64::NAN), b.eval(&|_| f64::NAN)) {
            (Some(x), Some(y)) => close(&x, &y),
            _ => false,
        };
    }
    let mut defined = 0;
    for point in 0..POINTS {
        let value_of = |name: &str| names.iter().position(|n| n == name).map_or(f64::NAN, |j| point_value(point, j));
        match (a.eval(&value_of), b.eval(&value_of)) {
            (Some(x), Some(y)) => {
                if !close(&x, &y) {
                    return false;
                }
                defined += 1;
            }
            (None, None) => {}
            // Defined on one side only: `x/x` against `1` at a point is fine, but one side defined
            // where the other never is shows a different function; count it as a miss.
            _ => {}
        }
    }
    defined >= MIN_DEFINED_POINTS
}
