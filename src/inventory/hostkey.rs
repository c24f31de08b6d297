//! Pinned SSH host keys, parsed when the inventory loads.

use russh::keys::PublicKey;

/// Parses a pinned host key: `ssh-ed25519 AAAA… [comment]`, or a known_hosts line
/// (`host ssh-ed25519 AAAA…`), whose leading host field is ignored.
pub fn parse_host_key(line: &str) -> Result<PublicKey, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let key_at = fields
        .iter()
        .position(|f| f.starts_with("AAAA"))
        .ok_or_else(|| "expected an OpenSSH public key like `ssh-ed25519 AAAA…`".to_string())?;
    if key_at == 0 {
        return Err("missing the key type before the base64 key".into());
    }
    let openssh = format!("{} {}", fields[key_at - 1], fields[key_at]);
    PublicKey::from_openssh(&openssh).map_err(|e| format!("invalid public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::parse_host_key;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    #[test]
    fn parses_plain_and_known_hosts_forms() {
        let a = parse_host_key(KEY).expect("plain");
        let b = parse_host_key(&format!("[10.0.0.1]:2222 {KEY} root@x")).expect("known_hosts");
        assert_eq!(a, b);
        assert!(parse_host_key("nonsense").is_err());
        assert!(parse_host_key("AAAAC3Nza").is_err());
        assert!(parse_host_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3a").is_err());
    }
}
