//! Counting in plain English: "1 host", "3 hosts".

/// `n` and `noun`, the noun in the plural unless `n` is 1. Every noun kbs counts takes an "s".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// "a", "a, b" or "a, b and N more": a list that stays short at any length (hosts, objects).
pub fn some<S: AsRef<str>>(names: &[S]) -> String {
    match names {
        [one] => one.as_ref().to_string(),
        [a, b] => format!("{}, {}", a.as_ref(), b.as_ref()),
        [a, b, rest @ ..] => format!("{}, {} and {} more", a.as_ref(), b.as_ref(), rest.len()),
        [] => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plural_unless_one() {
        assert_eq!(super::count(1, "host"), "1 host");
        assert_eq!(super::count(0, "control plane"), "0 control planes");
        assert_eq!(super::count(3, "etcd member"), "3 etcd members");
    }
}
