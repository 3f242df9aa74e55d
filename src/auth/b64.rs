//! base64url without padding (JWS, JWK), through base64ct.

use base64ct::{Base64UrlUnpadded, Encoding};

pub(crate) fn decode(text: &str) -> Result<Vec<u8>, base64ct::Error> {
    Base64UrlUnpadded::decode_vec(text)
}

#[cfg(test)]
pub(crate) fn encode(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}
