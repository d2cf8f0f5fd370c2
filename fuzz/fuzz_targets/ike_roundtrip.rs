//! decode → encode: whatever the codec accepts, as a message or as the payload
//! chain inside an SK payload, encodes again, and that decodes to the same thing.

#![no_main]

use esptun::wire::payload::{decode_chain, encode_chain, first_type};
use esptun::wire::{Message, PayloadType, Reader, Writer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = m.encode().expect("a decoded message encodes");
        assert_eq!(
            Message::decode(&again).expect("re-encoded message decodes"),
            m
        );
    }
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    if let Ok(chain) = decode_chain(PayloadType(first), &mut Reader::new(rest)) {
        let mut w = Writer::new();
        encode_chain(&chain, &mut w);
        let again = w.finish().expect("a decoded chain encodes");
        let decoded = decode_chain(first_type(&chain), &mut Reader::new(&again));
        assert_eq!(decoded.expect("re-encoded chain decodes"), chain);
    }
});
