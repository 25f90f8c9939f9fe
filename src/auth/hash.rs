//! [`TokenHash`]: what the configuration database keeps of a user's token.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::Token;

/// The SHA-256 of a user token: all the configuration database keeps of it, so
/// whoever reads the database (or a backup, or an export) cannot call as the user.
///
/// # Why a fast, unsalted hash is right here
///
/// User tokens are not chosen by people: [`Token::generate`] draws 256 bits from
/// the operating system's RNG. Nobody can try 2^256 candidates, however cheap each
/// try is, so a deliberately slow hash (bcrypt, scrypt, Argon2) would buy no
/// safety and would cost milliseconds of CPU on every management call; and with
/// no two tokens alike, a salt has nothing to protect against. For **passwords**
/// this would be wrong: people pick them from a space small enough to enumerate,
/// and a fast hash lets whoever reads the database test billions of guesses a
/// second. Passwords need a salted, slow hash; Spectrum accepts no user-chosen
/// secrets, only the tokens it issues (the bootstrap token in the node file is
/// compared in constant time and never stored).
///
/// Looking a hash up in a map is not constant-time, which is fine: timing can at
/// most reveal something about the hash of a guess, and the attacker already
/// knows that.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &Token) -> Self {
        Self(Sha256::digest(token.expose().as_bytes()).into())
    }

    /// Its 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// Text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a token hash is 64 hex digits")]
pub struct InvalidTokenHash;

impl FromStr for TokenHash {
    type Err = InvalidTokenHash;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(InvalidTokenHash);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(s.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| InvalidTokenHash)?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| InvalidTokenHash)?;
        }
        Ok(Self(bytes))
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_round_trips_as_hex_and_never_shows_the_token() {
        let token: Token = "spt_abc".parse().unwrap();
        let hash = TokenHash::of(&token);
        assert_eq!(hash, TokenHash::of(&"spt_abc".parse().unwrap()));
        assert_ne!(hash, TokenHash::of(&"spt_abd".parse().unwrap()));
        assert_eq!(hash.to_hex().parse::<TokenHash>().unwrap(), hash);
        for bad in ["", "zz", &"g".repeat(64), &"a".repeat(63)] {
            assert!(bad.parse::<TokenHash>().is_err(), "{bad}");
        }
    }
}
