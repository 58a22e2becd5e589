//! Call bodies: CALL_FUNCTION requests and their answers, decoded from arbitrary bytes
//! (docs/shutdown.md "Calls").
//!
//! Input: a byte choosing request or result, then the body. Properties: decoding never panics;
//! a body that decodes encodes again to one that decodes to the same value (postcard accepts
//! overlong lengths, so the bytes themselves may differ); a decoded request rebuilt through
//! `CallRequest::body` gives the same bytes as `encode`.

use arbor_core::call::{
    decode_result, encode_result, CallError, CallErrorKind, CallRequest, RequestMeta, TypeFingerprint,
};
use bytes::Bytes;

use crate::input::Script;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((kind, body)) = data.split_first() else { return };
    let body = Bytes::copy_from_slice(body);
    if kind % 2 == 0 {
        request(&body);
    } else {
        result(&body);
    }
}

fn request(body: &Bytes) {
    let Ok(req) = CallRequest::decode(body) else { return };
    let again = req.encode();
    assert_eq!(CallRequest::decode(&again).as_ref(), Ok(&req), "a request changed through encode");
    let rebuilt = CallRequest::body_with(&req.function, &req.args, req.meta);
    assert_eq!(rebuilt.bytes(), &again, "two encoders disagree");
    assert_eq!(rebuilt.timeout(), req.meta.timeout, "the body's timeout is the request's");
}

fn result(body: &Bytes) {
    let Ok(res) = decode_result(body) else { return };
    let again = encode_result(&res);
    assert_eq!(decode_result(&again).as_ref(), Ok(&res), "a result changed through encode");
}

/// Seeds: requests and results of every kind, as the drivers write them.
pub fn seeds() -> Vec<Vec<u8>> {
    let typed = CallRequest::new("add", vec![2, 3]).with_meta(RequestMeta {
        types: Some(TypeFingerprint::of::<(u8, u8), u8>()),
        timeout: Some(std::time::Duration::from_millis(250)),
    });
    let requests = [CallRequest::new("work", vec![1, 2, 3]), CallRequest::new("", Vec::new()), typed];
    let kinds = [CallErrorKind::Failed, CallErrorKind::UnknownFunction, CallErrorKind::TooLarge];
    let mut seeds: Vec<Vec<u8>> =
        requests.iter().map(|r| Script::default().byte(0).raw(&r.encode()).0.clone()).collect();
    seeds.push(Script::default().byte(1).raw(&encode_result(&Ok(Bytes::from_static(b"42")))).0.clone());
    for kind in kinds {
        let err = Err(CallError::new(kind, "no", "context 3"));
        seeds.push(Script::default().byte(1).raw(&encode_result(&err)).0.clone());
    }
    seeds
}
