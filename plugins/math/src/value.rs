//! The values answers evaluate to: exact rationals while the arithmetic stays rational, complex floats
//! once it leaves them (roots, π, trigonometry), and signed infinity for interval ends.
//!
//! Exact values keep `0.1 + 0.2 = 3/10` exact and let integers of any size compare without rounding;
//! an exact value whose numerator or denominator would pass [`MAX_EXACT_BITS`] becomes a float, so a
//! hostile `10^{10^{9}}` costs no memory.

use num_bigint::BigInt;
use num_complex::Complex64;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// Largest numerator or denominator kept exact, in bits.
const MAX_EXACT_BITS: u64 = 4096;

/// Relative tolerance of two inexact values (and of an inexact against an exact one): far above
/// float64 rounding, far below a written-out approximation (`3.14159` is not `\pi`, as in math-verify).
pub const RELATIVE_TOLERANCE: f64 = 1e-9;

/// Below this magnitude a difference counts as zero (`\sin\pi` against `0`).
const ABSOLUTE_TOLERANCE: f64 = 1e-10;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Exact(BigRational),
    Approx(Complex64),
    /// `+∞` (true) or `-∞` (false).
    Infinite(bool),
}

fn too_big(r: &BigRational) -> bool {
    r.numer().bits() > MAX_EXACT_BITS || r.denom().bits() > MAX_EXACT_BITS
}

fn to_f64(r: &BigRational) -> f64 {
    r.to_f64().unwrap_or(f64::NAN)
}

impl Value {
    /// An exact value, or its float when it is too large to keep exact.
    pub fn exact(r: BigRational) -> Value {
        if too_big(&r) {
            Value::Approx(Complex64::new(to_f64(&r), 0.0))
        } else {
            Value::Exact(r)
        }
    }

    pub fn integer(n: i64) -> Value {
        Value::Exact(BigRational::from_integer(BigInt::from(n)))
    }

    pub fn real(x: f64) -> Value {
        Value::Approx(Complex64::new(x, 0.0))
    }

    /// The value as a complex float; `None` for infinity.
    pub fn complex(&self) -> Option<Complex64> {
        match self {
            Value::Exact(r) => Some(Complex64::new(to_f64(r), 0.0)),
            Value::Approx(z) => Some(*z),
            Value::Infinite(_) => None,
        }
    }

    /// Whether the value is a usable number (not NaN, not an overflow).
    pub fn is_finite(&self) -> bool {
        match self {
            Value::Exact(_) => true,
            Value::Approx(z) => z.re.is_finite() && z.im.is_finite(),
            Value::Infinite(_) => false,
        }
    }

    /// The real value as a float (`None` when it has an imaginary part beyond rounding).
    pub fn as_real(&self) -> Option<f64> {
        match self {
            Value::Exact(r) => Some(to_f64(r)),
            Value::Approx(z) if z.im.abs() <= ABSOLUTE_TOLERANCE * z.re.abs().max(1.0) => Some(z.re),
            Value::Approx(_) => None,
            Value::Infinite(positive) => Some(if *positive { f64::INFINITY } else { f64::NEG_INFINITY }),
        }
    }

    /// The exact integer, when this is one.
    pub fn as_integer(&self) -> Option<BigInt> {
        match self {
            Value::Exact(r) if r.is_integer() => Some(r.to_integer()),
            _ => None,
        }
    }

    pub fn negate(self) -> Value {
        match self {
            Value::Exact(r) => Value::Exact(-r),
            Value::Approx(z) => Value::Approx(-z),
            Value::Infinite(positive) => Value::Infinite(!positive),
        }
    }

    pub fn plus(self, other: Value) -> Option<Value> {
        match (self, other) {
            (Value::Exact(a), Value::Exact(b)) => Some(Value::exact(a + b)),
            (Value::Infinite(p), Value::Infinite(q)) => (p == q).then_some(Value::Infinite(p)),
            (Value::Infinite(p), finite) | (finite, Value::Infinite(p)) => finite.as_real().map(|_| Value::Infinite(p)),
            (a, b) => Some(Value::Approx(a.complex()? + b.complex()?)),
        }
    }

    pub fn minus(self, other: Value) -> Option<Value> {
        self.plus(other.negate())
    }

    pub fn times(self, other: Value) -> Option<Value> {
        match (self, other) {
            (Value::Exact(a), Value::Exact(b)) => Some(Value::exact(a * b)),
            (Value::Infinite(p), Value::Infinite(q)) => Some(Value::Infinite(p == q)),
            (Value::Infinite(p), finite) | (finite, Value::Infinite(p)) => {
                let x = finite.as_real()?;
                (x != 0.0).then_some(Value::Infinite(p == (x > 0.0)))
            }
            (a, b) => Some(Value::Approx(a.complex()? * b.complex()?)),
        }
    }

    pub fn over(self, other: Value) -> Option<Value> {
        match (self, other) {
            (_, Value::Exact(b)) if b.is_zero() => None,
            (Value::Exact(a), Value::Exact(b)) => Some(Value::exact(a / b)),
            (_, Value::Infinite(_)) => None,
            (Value::Infinite(p), finite) => {
                let x = finite.as_real()?;
                (x != 0.0).then_some(Value::Infinite(p == (x > 0.0)))
            }
            (a, b) => {
                let b = b.complex()?;
                (b.norm() > 0.0).then(|| Value::Approx(a.complex().unwrap_or_default() / b))
            }
        }
    }

    /// `self^exponent`: exact for rational bases with integer exponents (and rational exponents
    /// whose root is exact), the real root for odd roots of negative numbers, else complex.
    pub fn pow(self, exponent: Value) -> Option<Value> {
        if let (Value::Exact(base), Value::Exact(e)) = (&self, &exponent) {
            if let Some(v) = exact_power(base, e) {
                return Some(v);
            }
            if base.is_negative() && !e.is_integer() && e.denom() % 2u32 == BigInt::one() {
                // (-8)^(1/3) = -2: the real root, as a reader of `\sqrt[3]{-8}` means.
                let magnitude = to_f64(&-base.clone()).powf(to_f64(e));
                let odd_numerator = e.numer() % 2u32 != BigInt::zero();
                return Some(Value::real(if odd_numerator { -magnitude } else { magnitude }));
            }
        }
        let base = self.complex()?;
        let e = exponent.complex()?;
        if base == Complex64::zero() {
            return if e.re > 0.0 { Some(Value::integer(0)) } else { None };
        }
        if base.im == 0.0 && e.im == 0.0 && (base.re > 0.0 || e.re.fract() == 0.0) {
            return Some(Value::real(base.re.powf(e.re)));
        }
        Some(Value::Approx(base.powc(e)))
    }

    /// The principal square root (`√-4 = 2i`), exact when the value is an exact square.
    pub fn sqrt(self) -> Option<Value> {
        self.pow(Value::Exact(BigRational::new(BigInt::one(), BigInt::from(2))))
    }
}

/// `base^e` exactly, when `e` is an integer of sensible size or a rational whose root of `base` is
/// exact.
fn exact_power(base: &BigRational, e: &BigRational) -> Option<Value> {
    let numer = e.numer().to_i64()?;
    let denom = e.denom().to_u32()?;
    if base.is_zero() {
        return (numer > 0).then(|| Value::integer(0));
    }
    let bits = base.numer().bits().max(base.denom().bits());
    if numer.unsigned_abs().saturating_mul(bits) > MAX_EXACT_BITS {
        return None;
    }
    let rooted = if denom == 1 {
        base.clone()
    } else {
        if base.is_negative() || denom > 64 {
            return None;
        }
        let root = |n: &BigInt| {
            let r = n.nth_root(denom);
            (r.pow(denom) == *n).then_some(r)
        };
        BigRational::new(root(base.numer())?, root(base.denom())?)
    };
    let powered = num_traits::pow(rooted, numer.unsigned_abs() as usize);
    Some(Value::exact(if numer < 0 { powered.recip() } else { powered }))
}

/// Whether two values are equal: exactly for two integers, within [`RELATIVE_TOLERANCE`] otherwise,
/// with infinities equal only to themselves.
pub fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // Integers compare exactly (1000000 is not 1000001); other rationals within the tolerance, as
        // a decimal such as 0.3333333333 stands for 1/3.
        (Value::Exact(x), Value::Exact(y)) if x.is_integer() && y.is_integer() => x == y,
        (Value::Exact(x), Value::Exact(y)) if x == y => true,
        (Value::Infinite(p), Value::Infinite(q)) => p == q,
        (Value::Infinite(_), _) | (_, Value::Infinite(_)) => false,
        _ => match (a.complex(), b.complex()) {
            (Some(x), Some(y)) => {
                let difference = (x - y).norm();
                difference <= ABSOLUTE_TOLERANCE || difference <= RELATIVE_TOLERANCE * x.norm().max(y.norm())
            }
            _ => false,
        },
    }
}

/// The exact value of a decimal literal such as `3.250` (digits and at most one point).
pub fn decimal(literal: &str) -> Option<BigRational> {
    let (int, frac) = literal.split_once('.').unwrap_or((literal, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    let numer: BigInt = if digits.is_empty() { BigInt::zero() } else { digits.parse().ok()? };
    let denom = num_traits::pow(BigInt::from(10), frac.len());
    Some(BigRational::new(numer, denom))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: i64, d: i64) -> Value {
        Value::Exact(BigRational::new(n.into(), d.into()))
    }

    #[test]
    fn rational_arithmetic_stays_exact() {
        let tenth = Value::Exact(decimal("0.1").unwrap());
        let sum = tenth.clone().plus(Value::Exact(decimal("0.2").unwrap())).unwrap();
        assert_eq!(sum, q(3, 10));
        assert_eq!(q(4, 9).sqrt().unwrap(), q(2, 3));
        assert_eq!(q(8, 1).pow(q(-2, 3)).unwrap(), q(1, 4));
        assert_eq!(q(2, 1).pow(q(100, 1)).unwrap().as_integer().unwrap().bits(), 101);
        assert!(q(1, 1).over(q(0, 1)).is_none());
    }

    #[test]
    fn irrational_values_compare_within_tolerance() {
        let root2 = q(2, 1).sqrt().unwrap();
        assert!(matches!(root2, Value::Approx(_)));
        let root18 = q(18, 1).sqrt().unwrap();
        assert!(close(&q(3, 1).times(root2.clone()).unwrap(), &root18));
        assert!(!close(&root2, &Value::real(14142.0 / 10000.0)));
        assert!(close(&q(-8, 1).pow(q(1, 3)).unwrap(), &q(-2, 1)));
        let i = q(-4, 1).sqrt().unwrap().complex().unwrap();
        assert!((i - Complex64::new(0.0, 2.0)).norm() < 1e-12);
    }

    #[test]
    fn huge_powers_leave_exact_arithmetic() {
        let big = q(10, 1).pow(q(1_000_000_000, 1)).unwrap();
        assert!(matches!(big, Value::Approx(_)), "{big:?}");
        assert!(!big.is_finite());
    }
}
