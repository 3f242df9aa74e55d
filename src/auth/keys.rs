//! The issuer's signing keys (a JWKS) and signature checks with them.
//!
//! Only asymmetric keys count: RSA (RS256/384/512, PS256/384/512) and EC on P-256, P-384 and
//! P-521 (ES256, ES384, ES512, each on its own curve). A symmetric (`oct`) key published in a
//! key set is public by definition, so a token "signed" with it proves nothing: such keys, keys
//! meant for encryption (`use: enc`) and kinds we do not know are left out (and said so).

use p256::ecdsa::signature::Verifier;
use rsa::{BigUint, RsaPublicKey};
use serde_json::Value;

use super::b64;

/// One signing key of the issuer.
pub(crate) struct Key {
    pub(crate) kid: String,
    /// The algorithm the key set names for this key, if it names one.
    alg: Option<String>,
    public: Public,
}

enum Public {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
}

/// A key set as published, parsed: the usable keys, and why the others were left out.
pub(crate) struct KeySet {
    pub(crate) keys: Vec<Key>,
    pub(crate) skipped: Vec<String>,
}

impl KeySet {
    pub(crate) fn parse(text: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let entries =
            doc.get("keys").and_then(Value::as_array).ok_or_else(|| "no \"keys\" array".to_string())?;
        let mut set = KeySet { keys: Vec::new(), skipped: Vec::new() };
        for (i, entry) in entries.iter().enumerate() {
            match Key::parse(entry) {
                Ok(key) => set.keys.push(key),
                Err(why) => {
                    let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
                    set.skipped.push(format!("key {i} (kid {kid:?}): {why}"));
                }
            }
        }
        Ok(set)
    }

    pub(crate) fn find(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub(crate) fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }
}

fn member<'a>(entry: &'a Value, name: &str) -> Result<&'a str, String> {
    entry.get(name).and_then(Value::as_str).ok_or_else(|| format!("no \"{name}\""))
}

fn bytes(entry: &Value, name: &str) -> Result<Vec<u8>, String> {
    b64::decode(member(entry, name)?).map_err(|_| format!("\"{name}\" is not base64url"))
}

impl Key {
    fn parse(entry: &Value) -> Result<Key, String> {
        let kid = entry.get("kid").and_then(Value::as_str).ok_or("no \"kid\" (tokens name their key)")?;
        if entry.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
            return Err("not a signing key (\"use\" is not \"sig\")".into());
        }
        let public = match member(entry, "kty")? {
            "RSA" => {
                let n = BigUint::from_bytes_be(&bytes(entry, "n")?);
                let e = BigUint::from_bytes_be(&bytes(entry, "e")?);
                Public::Rsa(RsaPublicKey::new(n, e).map_err(|e| format!("invalid RSA key: {e}"))?)
            }
            "EC" => {
                let (x, y) = (bytes(entry, "x")?, bytes(entry, "y")?);
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let bad = |_| "invalid EC point".to_string();
                match member(entry, "crv")? {
                    "P-256" => Public::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad)?),
                    "P-384" => Public::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad)?),
                    "P-521" => Public::P521(p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad)?),
                    other => return Err(format!("curve {other:?} is not supported")),
                }
            }
            "oct" => return Err("a symmetric key: anyone who reads the key set could sign with it".into()),
            other => return Err(format!("key type {other:?} is not supported")),
        };
        let alg = entry.get("alg").and_then(Value::as_str).map(str::to_string);
        Ok(Key { kid: kid.to_string(), alg, public })
    }

    /// Checks `signature` over `signed` with this key under `alg`, which must fit the key.
    pub(crate) fn verify(&self, alg: &str, signed: &[u8], signature: &[u8]) -> Result<(), String> {
        if self.alg.as_deref().is_some_and(|a| a != alg) {
            return Err(format!(
                "signing method {alg} is not the key's ({})",
                self.alg.as_deref().unwrap_or("")
            ));
        }
        let unfit = || format!("signing method {alg} does not fit key {:?}", self.kid);
        let ok =
            match &self.public {
                Public::Rsa(key) => rsa_verify(key, alg, signed, signature).ok_or_else(unfit)?,
                Public::P256(key) if alg == "ES256" => p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|s| key.verify(signed, &s).is_ok()),
                Public::P384(key) if alg == "ES384" => p384::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|s| key.verify(signed, &s).is_ok()),
                Public::P521(key) if alg == "ES512" => p521::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|s| key.verify(signed, &s).is_ok()),
                _ => return Err(unfit()),
            };
        if ok { Ok(()) } else { Err("verification error".into()) }
    }
}

/// `None`: `alg` is not an RSA algorithm.
fn rsa_verify(key: &RsaPublicKey, alg: &str, signed: &[u8], signature: &[u8]) -> Option<bool> {
    use rsa::{pkcs1v15, pss};
    use sha2::{Sha256, Sha384, Sha512};
    let Ok(sig) = pkcs1v15::Signature::try_from(signature) else {
        return Some(false);
    };
    let Ok(pss_sig) = pss::Signature::try_from(signature) else {
        return Some(false);
    };
    let key = key.clone();
    Some(match alg {
        "RS256" => pkcs1v15::VerifyingKey::<Sha256>::new(key).verify(signed, &sig).is_ok(),
        "RS384" => pkcs1v15::VerifyingKey::<Sha384>::new(key).verify(signed, &sig).is_ok(),
        "RS512" => pkcs1v15::VerifyingKey::<Sha512>::new(key).verify(signed, &sig).is_ok(),
        "PS256" => pss::VerifyingKey::<Sha256>::new(key).verify(signed, &pss_sig).is_ok(),
        "PS384" => pss::VerifyingKey::<Sha384>::new(key).verify(signed, &pss_sig).is_ok(),
        "PS512" => pss::VerifyingKey::<Sha512>::new(key).verify(signed, &pss_sig).is_ok(),
        _ => return None,
    })
}
