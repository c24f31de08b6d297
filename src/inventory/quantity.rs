//! Kubernetes resource quantities ("500m", "1.5", "512Mi", "2G", "1e3"), compared by value: the API
//! server stores them in canonical form ("1.5" comes back as "1500m", "1024Mi" as "1Gi"), so
//! the text an operator wrote and the text the API returns differ for the same amount.

use std::fmt;

/// A quantity as written, and its exact value.
#[derive(Debug, Clone, Eq)]
pub struct Quantity {
    text: String,
    /// The value in units of 10⁻¹⁵: exact for every suffix, and wide enough for exabytes.
    femto: i128,
}

const FEMTO: i128 = 1_000_000_000_000_000;

impl Quantity {
    /// `None` unless `s` is a non-negative quantity in Kubernetes' grammar: a decimal number,
    /// then a binary suffix (Ki … Ei), a decimal one (n, u, m, k, M … E) or an exponent (e3).
    pub fn parse(s: &str) -> Option<Self> {
        let digits_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(digits_end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() && frac.is_empty() || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        // Value = mantissa × 10^ten × 2^two.
        let mut mantissa: i128 = format!("{int}{frac}").parse().ok()?;
        let mut ten: i32 = -i32::try_from(frac.len()).ok()?;
        let mut two: u32 = 0;
        match suffix {
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                two = 10 * (1 + "KMGTPE".find(&suffix[..1])? as u32);
            }
            "n" => ten -= 9,
            "u" => ten -= 6,
            "m" => ten -= 3,
            "" => {}
            "k" => ten += 3,
            "M" => ten += 6,
            "G" => ten += 9,
            "T" => ten += 12,
            "P" => ten += 15,
            "E" => ten += 18,
            e => {
                let exp = e.strip_prefix(['e', 'E'])?;
                let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if unsigned.is_empty() || !all_digits(unsigned) {
                    return None;
                }
                ten += exp.parse::<i32>().ok()?;
            }
        }
        mantissa = mantissa.checked_mul(1i128.checked_shl(two)?)?;
        let scale = ten + 15;
        let femto = if scale >= 0 {
            mantissa.checked_mul(10i128.checked_pow(scale.unsigned_abs())?)?
        } else {
            let div = 10i128.checked_pow(scale.unsigned_abs())?;
            // Finer than 10⁻¹⁵ is beyond any resource; such a quantity is refused, not rounded.
            if mantissa % div != 0 {
                return None;
            }
            mantissa / div
        };
        Some(Self {
            text: s.to_string(),
            femto,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is a whole number of units (a count such as `pods`).
    pub fn is_whole(&self) -> bool {
        self.femto % FEMTO == 0
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.femto == other.femto
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::Quantity;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn equal_amounts_in_different_forms_are_equal() {
        assert_eq!(q("1.5"), q("1500m"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("2G"), q("2000M"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("250m").to_string(), "250m");
        assert_ne!(q("1G"), q("1Gi"));
        assert_ne!(q("4"), q("8"));
        assert!(q("50").is_whole() && !q("500m").is_whole());
        assert_eq!(q("8Ei"), q("8192Pi"));
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in [
            "",
            "m",
            "-1",
            "1.2.3",
            "1 Gi",
            "1gi",
            "1e",
            "1e+",
            "2x",
            "1.5n5",
            "0.0000001n",
        ] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
    }
}
